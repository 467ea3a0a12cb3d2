"""report"""

from convprof.report.results import *  # noqa: F403
