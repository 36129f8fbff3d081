"""``hydra/launcher=stacked`` where Hydra looks for launchers: Hydra instantiates a launcher only
from its plugin namespace (``hydra_plugins``); the launcher itself is ``vae_lab.stacked_launcher``."""
from vae_lab.stacked_launcher import StackedLauncher as VaeLabStackedLauncher


class StackedLauncher(VaeLabStackedLauncher):
    """``vae_lab.stacked_launcher.StackedLauncher``, under the name Hydra accepts."""
