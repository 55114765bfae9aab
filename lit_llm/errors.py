"""User-facing errors.

A `ConfigError` means the user asked for something that cannot work (a missing file, a bad
config value). Its message names the config key or file and says how to fix it; entry points
print it in one line and exit with status 2 instead of showing a traceback.
"""


class ConfigError(ValueError):
    """Bad input from the user: message names the config key / file and the fix."""
