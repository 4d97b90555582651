"""The Ray Serve application: deployments, HTTP ingress, scheduler and the board.

Every replica of the app imports this package before any of its modules, so the process-wide
malloc settings of the long-running service are applied here, once per process, for all five
deployments (see common/allocator.py: without them glibc keeps the tick's freed frames and the
replicas' resident memory grows by the hour).
"""

from common.allocator import limit_retained_memory

limit_retained_memory()
