"""A nameko timer whose interval comes from the container config instead of a literal."""
from nameko.timer import Timer

from shared.config import from_nameko


class ConfiguredTimer(Timer):
    def __init__(self, setting, **kwargs):
        super().__init__(interval=None, **kwargs)
        self.setting = setting

    def setup(self):
        self.interval = getattr(from_nameko(self.container.config), self.setting)
        super().setup()


configured_timer = ConfiguredTimer.decorator
