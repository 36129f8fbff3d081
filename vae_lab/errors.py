class VaeLabError(Exception):
    """A problem the user can fix (bad config, missing data, bad checkpoint).

    Entry points print its message as a single line and exit non-zero, without a traceback; a
    notebook (IPython) shows the same line.
    """

    def _render_traceback_(self) -> list[str]:  # IPython's hook for how an exception is shown
        return [f"VaeLabError: {self}"]
