"""A real one-node SLURM cluster on localhost, for the SLURM tests (and `.ci/run`).

Debian's packages (slurm-wlm, slurmdbd, munge, mariadb-server), every daemon started by us
with its files in one temporary folder (no /etc edits, random ports), stopped by pid at the end:

    munged -> mariadbd (+ a `slurm` user) -> slurmdbd -> `sacctmgr add cluster`
           -> slurmctld -> slurmd

Clients (sbatch, sacct, scontrol, submitit) find it through ``SLURM_CONF`` (see ``Cluster.env``).

    python -m tests.slurm.slurm_cluster start [DIR]   # prints `export SLURM_CONF=...`; stays up
    python -m tests.slurm.slurm_cluster stop DIR
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ["slurm-wlm", "slurmdbd", "munge", "mariadb-server"]
BINARIES = [
    "sbatch",
    "sacct",
    "sacctmgr",
    "scontrol",
    "slurmctld",
    "slurmd",
    "slurmdbd",
    "munged",
    "mariadbd",
    "mariadb-install-db",
    "mariadb",
]
PARTITION = "debug"
CPUS = 2
DB_PASS = "slurm-ci"  # a throw-away database bound to 127.0.0.1 for the tests' lifetime


class ClusterError(RuntimeError):
    """The cluster could not be installed or started although this machine should host it."""


class ClusterUnavailable(ClusterError):
    """This machine cannot host the cluster: no root or no apt-get (tests skip, saying so)."""


def _which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def missing_binaries():
    return [b for b in BINARIES if not _which(b)]


def install():
    """Installs the packages with apt if any binary is missing (ClusterUnavailable if it can't)."""
    if not missing_binaries():
        return False
    if os.geteuid() != 0:
        raise ClusterUnavailable(
            f"not root: cannot apt-get install {' '.join(PACKAGES)} "
            f"(missing: {', '.join(missing_binaries())})"
        )
    if not shutil.which("apt-get"):
        raise ClusterUnavailable(
            f"no apt-get: install {' '.join(PACKAGES)} yourself "
            f"(missing: {', '.join(missing_binaries())})"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
    ):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    if missing_binaries():
        raise ClusterError(f"installed {PACKAGES} but still missing {missing_binaries()}")
    return True


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mb():
    """Most of this machine's memory, so that jobs asking for some (--mem) are not refused."""
    with open("/proc/meminfo") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return total_kb // 1024 * 3 // 4


def _wait(what, check, timeout, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = Path(log).read_text(errors="replace")[-2000:] if log and Path(log).exists() else ""
    raise ClusterError(f"{what} not ready after {timeout} s\n{tail}")


class Cluster:
    """The daemons of one cluster: ``start()``, then ``stop()`` (ends the pids it started)."""

    def __init__(self, root=None):
        self.root = Path(root or tempfile.mkdtemp(prefix="slurm-ci-")).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # munged refuses a socket folder others can write to
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.pids, self._procs = {}, {}
        self.timings = {}

    # -- environment clients need ------------------------------------------------------------
    @property
    def env(self):
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *cmd, check=True, timeout=60):
        """Runs a SLURM client against this cluster; returns stdout."""
        r = subprocess.run(
            cmd, env=dict(os.environ, **self.env), capture_output=True, text=True, timeout=timeout
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
        return r.stdout

    # -- start / stop ----------------------------------------------------------------------------
    def _spawn(self, name, cmd, **kw):
        log = open(self.root / f"{name}.out", "ab")
        p = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, **self.env),
            start_new_session=True,
            **kw,
        )
        log.close()
        self.pids[name] = p.pid
        self._procs[name] = p
        (self.root / "pids").write_text("".join(f"{n} {q}\n" for n, q in self.pids.items()))
        return p

    def _alive(self, name):
        p = self._procs[name]
        if p.poll() is not None:
            log = (self.root / f"{name}.out").read_text(errors="replace")[-2000:]
            raise ClusterError(f"{name} exited with {p.returncode}:\n{log}")
        return True

    def start(self):
        if os.geteuid() != 0:
            raise ClusterUnavailable(
                "not root: the daemons run as root (SlurmUser=root, munged, "
                "MariaDB) and the packages are installed with apt-get"
            )
        t0 = time.monotonic()
        self.timings["install_s"] = (install(), time.monotonic() - t0)[1]
        t1 = time.monotonic()
        try:
            self._start_munge()
            self._start_mariadb()
            self._start_slurmdbd()
            self._start_slurm()
        except BaseException:
            self.stop()
            raise
        self.timings["start_s"] = time.monotonic() - t1
        return self

    def _start_munge(self):
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.munge_socket = self.root / "munge.socket"
        self._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.root / 'munged.pid'}",
                f"--log-file={self.root / 'munged.log'}",
                f"--seed-file={self.root / 'munged.seed'}",
            ],
        )
        _wait(
            "munged",
            lambda: self._alive("munged") and self.munge_socket.exists(),
            30,
            self.root / "munged.out",
        )

    def _start_mariadb(self):
        data, sock = self.root / "mysql", self.root / "mysql.sock"
        self.db_port = _free_port()
        r = subprocess.run(
            [
                _which("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise ClusterError(f"mariadb-install-db failed: {r.stderr[-1000:]}")
        self._spawn(
            "mariadbd",
            [
                _which("mariadbd"),
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={sock}",
                "--bind-address=127.0.0.1",
                f"--port={self.db_port}",
                "--user=root",
                "--skip-name-resolve",
                f"--pid-file={self.root / 'mariadbd.pid'}",
                "--innodb-buffer-pool-size=64M",
                # slurmdbd's schema needs these (its log says so otherwise)
                "--innodb-log-file-size=64M",
                "--innodb-lock-wait-timeout=900",
            ],
        )
        client = [_which("mariadb"), "--no-defaults", f"--socket={sock}", "-uroot"]

        def up():
            self._alive("mariadbd")
            return subprocess.run([*client, "-e", "SELECT 1"], capture_output=True).returncode == 0

        _wait("mariadbd", up, 60, self.root / "mariadbd.out")
        sql = (
            f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{DB_PASS}';"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
        )
        subprocess.run([*client, "-e", sql], check=True, capture_output=True)

    def _common_conf(self, cred_expire=False):
        # cred_expire: also how long a requeued job waits before it may start again (default
        # 120 s, which would make the preemption test wait two minutes for nothing).
        extra = ",cred_expire=10" if cred_expire else ""
        return f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}{extra}\n"

    def _start_slurmdbd(self):
        self.dbd_port = _free_port()
        dbd = self.root / "slurmdbd.conf"
        dbd.write_text(
            self._common_conf()
            + f"""\
DbdHost=localhost
DbdPort={self.dbd_port}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.db_port}
StorageUser=slurm
StoragePass={DB_PASS}
StorageLoc=slurm_acct_db
PidFile={self.root / "slurmdbd.pid"}
LogFile={self.root / "slurmdbd.log"}
"""
        )
        dbd.chmod(0o600)  # slurmdbd refuses a readable password file
        self._write_slurm_conf()  # slurmdbd finds slurmdbd.conf next to $SLURM_CONF
        self._spawn("slurmdbd", [_which("slurmdbd"), "-D"])

        def up():
            self._alive("slurmdbd")
            return (
                subprocess.run(
                    ["sacctmgr", "-n", "list", "cluster"],
                    capture_output=True,
                    env=dict(os.environ, **self.env),
                    timeout=10,
                ).returncode
                == 0
            )

        _wait("slurmdbd", up, 60, self.root / "slurmdbd.log")
        self.run("sacctmgr", "-i", "add", "cluster", "ci")

    def _write_slurm_conf(self):
        if self.conf.exists():
            return
        (self.root / "state").mkdir()
        (self.root / "spool").mkdir()
        self.ctld_port, self.slurmd_port = _free_port(), _free_port()
        self.conf.write_text(
            self._common_conf(cred_expire=True)
            + f"""\
ClusterName=ci
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
CredType=cred/munge
StateSaveLocation={self.root / "state"}
SlurmdSpoolDir={self.root / "spool"}
SlurmctldPidFile={self.root / "slurmctld.pid"}
SlurmdPidFile={self.root / "slurmd.pid"}
SlurmctldLogFile={self.root / "slurmctld.log"}
SlurmdLogFile={self.root / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={self.dbd_port}
# the munge socket for talking to slurmdbd (AuthInfo only covers slurmctld/slurmd)
AccountingStoragePass={self.munge_socket}
SchedulerParameters=bf_interval=1
MinJobAge=300
KillWait=5
SlurmdParameters=config_overrides
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={_mem_mb()} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _start_slurm(self):
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i"])
        _wait(
            "slurmctld",
            lambda: (
                self._alive("slurmctld")
                and subprocess.run(
                    ["scontrol", "ping"],
                    env=dict(os.environ, **self.env),
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.count("UP")
                > 0
            ),
            60,
            self.root / "slurmctld.log",
        )
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", self.host])

        def idle():
            self._alive("slurmd")
            out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=10).strip()
            return out.startswith("idle")

        _wait("slurmd (node idle)", idle, 60, self.root / "slurmd.log")

    def _drain(self, timeout=60):
        """Cancels the jobs still queued or running and waits for their processes to end: a job's
        slurmstepd outlives slurmd by design (so that jobs survive a slurmd restart)."""
        jobs = self.run("squeue", "-h", "-o", "%i", check=False, timeout=20).split()
        if jobs:
            self.run("scancel", "--full", *jobs, check=False, timeout=20)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.run("squeue", "-h", check=False, timeout=20).strip()
            pids = self.run("scontrol", "listpids", check=False, timeout=20).splitlines()[1:]
            if not left and not pids:
                return
            time.sleep(0.5)

    def stop(self):
        """Stops what start() started, by pid, newest first (TERM, then KILL after 15 s), once
        the jobs still there are cancelled and gone."""
        if "slurmd" in self._procs and self._procs["slurmd"].poll() is None:
            try:
                self._drain()
            except (OSError, subprocess.SubprocessError):
                pass  # a daemon already gone: stop the others all the same
        for name in reversed(list(self.pids)):
            p = self._procs[name]
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
        self.pids.clear()

    def states(self, job_id, duplicates=False):
        """sacct's State column for the job's allocation, oldest first (``duplicates``: also the
        runs before each requeue, which sacct lists as REQUEUED)."""
        out = self.run(
            "sacct",
            "-n",
            "-X",
            "-P",
            "-o",
            "State",
            "-j",
            str(job_id),
            *(["-D"] if duplicates else []),
        )
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def wait(
        self,
        job_id,
        timeout=300,
        done=(
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "OUT_OF_MEMORY",
            "NODE_FAIL",
            "BOOT_FAIL",
        ),
    ):
        """Waits until sacct reports the job in a final state; returns that state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.states(job_id)
            if states and states[-1] in done:
                return states[-1]
            time.sleep(1)
        raise TimeoutError(
            f"job {job_id} still {self.states(job_id)} after {timeout} s; "
            f"squeue: {self.run('squeue', check=False)}"
        )

    def version(self):
        return self.run("sinfo", "--version").strip()


def _stop_from_dir(root):
    """`stop DIR` from another process: the pids file written at start."""
    try:
        Cluster(root)._drain()
    except (OSError, subprocess.SubprocessError):
        pass
    for line in reversed((Path(root) / "pids").read_text().splitlines()):
        name, pid = line.split()
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
        for _ in range(75):
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(int(pid), signal.SIGKILL)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("start", "stop") or (argv[0] == "stop" and len(argv) != 2):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "stop":
        _stop_from_dir(argv[1])
        return 0
    try:
        c = Cluster(argv[1] if len(argv) > 1 else None).start()
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    t = c.timings
    print(
        f"# {c.version()}: install {t['install_s']:.1f} s, start {t['start_s']:.1f} s",
        file=sys.stderr,
    )
    print(f"export SLURM_CONF={c.conf}")
    # Daemons run in their own sessions: they outlive this process; `stop DIR` ends them.
    return 0


if __name__ == "__main__":
    sys.exit(main())
