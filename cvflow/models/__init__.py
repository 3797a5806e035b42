"""Model families; importing this package registers every model."""
from cvflow.models import flownet2  # noqa: F401
from cvflow.models import raft  # noqa: F401
from cvflow.models import gmflow  # noqa: F401
from cvflow.models import neuflow2  # noqa: F401
