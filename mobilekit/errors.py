"""One exception type per kind of user mistake.

Library code raises these; the CLI catches :class:`MobilekitError` once and prints its message as a single line
(exit code 2). Every message names what is wrong (file, field, layer index) and how to fix it.
"""


class MobilekitError(Exception):
    """Base class of every error that is the user's to fix."""


class ArchitectureError(MobilekitError):
    """An architecture does not fit its search space (unknown type, wrong layer count, skip at stride 2...)."""


class SpaceError(MobilekitError):
    """An unknown search space name or an invalid space parameter (width, resolution, classes)."""


class ExportError(MobilekitError):
    """Exporting or verifying a deployable model failed, or a model file is corrupt."""


class DataError(MobilekitError):
    """A data set could not be read (missing folder, wrong CIFAR-10 batch format...)."""


class ConfigError(MobilekitError):
    """A config or descriptor file (TOML, JSON) is missing, malformed or has a bad field."""


class DeviceError(MobilekitError):
    """A device could not be reached, or its runner failed or printed something unexpected."""


class TableError(MobilekitError):
    """A latency table is malformed, does not match the space, or lacks an entry that is needed."""


class SearchError(MobilekitError):
    """A search cannot run as asked (target outside the table's range, resume from a different config...)."""


class OptionError(MobilekitError):
    """A command-line option is out of range, or a path given to a command is the wrong kind (a folder where a
    file belongs, an output that cannot be written)."""
