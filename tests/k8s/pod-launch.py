#!/usr/bin/python3
# tests/k8s/pod-launch.py - starts one container for the test kubelet
# (kubelet.py): join the pod's sandbox (the pause process's network, UTS
# and mount namespaces), make a mount namespace of the container's own with
# its volumes and its termination-message file bound in, chdir to its
# working directory, and exec its command with its environment.
#
# Usage: pod-launch.py SPEC.json   (written by kubelet.py; see start_container)
# Kept apart from kubelet.py, and small, so that a container starts fast.
# Missing mount points are never created on the host: they are made in the
# container's own directories or in a tmpfs mirror of the deepest existing
# parent (see Launcher.ensure).  Python 3 standard library only.

import ctypes
import errno
import json
import os
import stat
import sys


CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18


def exec_main(spec_path):
    """Join the pod's sandbox, make this container's own mount namespace
    with its volumes and termination-message file bound in, chdir, exec.
    On failure before the exec, write why to spec["startfail"]."""
    with open(spec_path) as f:
        spec = json.load(f)
    argv = spec["argv"]
    try:
        Launcher(spec).enter()
    except Exception as e:              # noqa: BLE001 - everything is a start error
        write_startfail(spec, "failed to create containerd task: %s" % e)
    sys.stdout.flush()
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as e:
        if e.errno == errno.ENOENT and "/" not in argv[0]:
            why = 'exec: "%s": executable file not found in $PATH' % argv[0]
        else:
            why = 'exec: "%s": %s' % (argv[0], os.strerror(e.errno or errno.EIO).lower())
        write_startfail(spec, "OCI runtime create failed: starting container process caused: %s: unknown" % why)


def write_startfail(spec, text):
    with open(spec["startfail"], "w") as f:
        f.write(text)
    os._exit(128)


class Launcher:
    def __init__(self, spec):
        self.spec = spec
        self.libc = ctypes.CDLL(None, use_errno=True)
        # Paths whose whole subtree we may write into (the pod's directory,
        # writable volumes) and directories that are our own tmpfs mirrors.
        self.tree_ours = list(spec.get("ours") or [])
        self.mirrors = set()

    def check(self, rc, what):
        if rc != 0:
            e = ctypes.get_errno()
            raise OSError(e, "%s: %s" % (what, os.strerror(e)))

    def mount(self, src, dst, fstype, flags, data=None):
        enc = (lambda s: s.encode() if s is not None else None)
        self.check(self.libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)),
                   "mount %s on %s" % (src, dst))

    def enter(self):
        pid = self.spec["pause"]
        fds = [(os.open("/proc/%d/ns/%s" % (pid, ns), os.O_RDONLY), ns) for ns in ("net", "uts", "mnt")]
        for fd, ns in fds:
            self.check(self.libc.setns(fd, 0), "setns %s of the sandbox" % ns)
            os.close(fd)
        self.check(self.libc.unshare(CLONE_NEWNS), "unshare the mount namespace")
        self.mount(None, "/", None, MS_REC | MS_PRIVATE)
        for m in self.spec["mounts"]:
            is_dir = os.path.isdir(m["src"])
            if not os.path.exists(m["src"]):
                raise OSError(errno.ENOENT, "volume source %s does not exist" % m["src"])
            self.ensure(m["dst"], is_dir)
            self.mount(m["src"], m["dst"], None, MS_BIND | MS_REC)
            if m.get("ro"):
                self.mount(None, m["dst"], None, MS_BIND | MS_REMOUNT | MS_RDONLY)
            if m.get("tree_ours"):
                self.tree_ours.append(os.path.normpath(m["dst"]))
        src, dst = self.spec["term"]
        self.ensure(dst, False)
        self.mount(src, dst, None, MS_BIND)
        cwd = self.spec["cwd"]
        self.ensure(cwd, True)
        os.chdir(cwd)

    def ours(self, path):
        path = os.path.normpath(path)
        if path in self.mirrors:
            return True
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.tree_ours)

    def ensure(self, path, is_dir):
        """Make PATH exist in this mount namespace only: missing components
        are created in our own directories, or in a tmpfs mirror of the
        deepest existing ancestor, never on the host's filesystem."""
        path = os.path.normpath(path)
        if os.path.lexists(path):
            return
        missing = []
        anc = path
        while not os.path.lexists(anc):
            missing.append(os.path.basename(anc))
            anc = os.path.dirname(anc)
        if not os.path.isdir(anc):
            raise OSError(errno.ENOTDIR, "%s is not a directory" % anc)
        if not self.ours(anc):
            self.mirror(anc)
        cur = anc
        for i, part in enumerate(reversed(missing)):
            cur = os.path.join(cur, part)
            if i == len(missing) - 1 and not is_dir:
                open(cur, "a").close()
            else:
                os.mkdir(cur, 0o755)
                self.tree_ours.append(cur)

    def mirror(self, anc):
        """Cover ANC with a tmpfs that holds the same entries (each bound
        from the original), so that new entries can be added to it."""
        fd = os.open(anc, os.O_PATH | os.O_DIRECTORY)
        entries = os.listdir(anc)
        mode = os.stat(anc).st_mode & 0o7777
        root = anc == "/"
        target = self.spec["scratch"] if root else anc
        self.mount("tmpfs", target, "tmpfs", 0, "mode=%o" % mode)
        for e in entries:
            old = "/proc/self/fd/%d/%s" % (fd, e)
            new = os.path.join(target, e)
            st = os.lstat(old)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(old), new)
                continue
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(new)
            else:
                open(new, "a").close()
            try:
                self.mount(old, new, None, MS_BIND | MS_REC)
            except OSError:
                pass                        # e.g. a socket that cannot be bound
        os.close(fd)
        if root:
            # "/" cannot be covered in place: the mirror becomes our root.
            os.chdir(target)
            os.chroot(".")
            os.chdir("/")
        self.mirrors.add(anc)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: pod-launch.py SPEC.json", file=sys.stderr)
        sys.exit(2)
    exec_main(sys.argv[1])
    sys.exit(127)
