class VaeLabError(Exception):
    """A problem the user can fix (bad config, missing data, bad checkpoint).

    Entry points print its message as a single line and exit non-zero, without a traceback.
    """
