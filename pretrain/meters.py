"""Progress figures every long job prints: items per second since a start, and the time left."""

import time


def format_duration(seconds):
    """``h:mm:ss`` (``0:03:07``); negative or unknown time reads as 0."""
    s = int(max(seconds or 0, 0))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Rate:
    """Items per second and ETA of a job of ``total`` items, measured from construction (or
    :meth:`restart`), so a resumed job reports its own speed, not an average over the pause."""

    def __init__(self, total, clock=time.perf_counter):
        self.total, self.clock = total, clock
        self.restart(0)

    def restart(self, done):
        self.t0, self.done0 = self.clock(), done

    def per_second(self, done):
        return (done - self.done0) / max(self.clock() - self.t0, 1e-9)

    def eta_s(self, done):
        rate = self.per_second(done)
        return (self.total - done) / rate if rate > 0 else None

    def eta(self, done):
        left = self.eta_s(done)
        return "?" if left is None else format_duration(left)
