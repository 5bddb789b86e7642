"""A package-manager-like workload on a debootstrapped Debian: the upper dir it leaves."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder.executor import Mount

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

# python3-minimal has no json or shutil: plain text plans and os only.
WORKLOAD = r"""
import os
lines = lambda name: open("/plan/" + name).read().split()
os.makedirs("/usr/share/pb")
for i in range(3000):
    with open(f"/usr/share/pb/f{i:05d}", "w") as f:
        f.write(str(i))
for path in lines("replace"):
    tmp = path + ".dpkg-new"
    with open(tmp, "w") as f:
        f.write("replaced " + path)
    os.replace(tmp, path)      # as dpkg does: write aside, rename over
for path in lines("delete"):
    os.unlink(path)
for top, dirs, files in os.walk("/usr/share/doc", topdown=False):
    for name in files:
        os.unlink(os.path.join(top, name))
    for name in dirs:
        p = os.path.join(top, name)
        os.unlink(p) if os.path.islink(p) else os.rmdir(p)
os.rmdir("/usr/share/doc")
os.mkdir("/usr/share/doc")
open("/usr/share/doc/only", "w").close()
print("done")
"""


def test_package_manager_like_workload(debian_rootfs: Path, tmp_path: Path, run_on) -> None:
    pyfiles = sorted(str(p.relative_to(debian_rootfs)) for p in
                     (debian_rootfs / "usr" / "lib" / "python3.11").glob("*.py"))
    assert len(pyfiles) > 80
    replace, delete = pyfiles[:30], pyfiles[30:80]
    plan_dir = tmp_path / "plan"
    plan_dir.mkdir()
    (plan_dir / "replace").write_text("".join(f"/{p}\n" for p in replace))
    (plan_dir / "delete").write_text("".join(f"/{p}\n" for p in delete))
    (plan_dir / "w.py").write_text(WORKLOAD)
    result = run_on(debian_rootfs, ("python3", "/plan/w.py"),
                    mounts=(Mount("bind", "/plan", source=plan_dir, readonly=True),))
    assert (result.code, result.output) == (0, "done\n")
    upper = result.upper

    new = sorted(os.listdir(upper / "usr" / "share" / "pb"))
    assert len(new) == 3000 and new[0] == "f00000"
    assert (upper / "usr" / "share" / "pb" / "f02999").read_text() == "2999"
    for rel in replace:
        assert (upper / rel).read_text() == f"replaced /{rel}"
        assert not os.path.lexists(upper / (rel + ".dpkg-new"))
    for rel in delete:
        st = os.lstat(upper / rel)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, rel
    doc = upper / "usr" / "share" / "doc"
    assert os.listdir(doc) == ["only"]
    assert os.getxattr(doc, "trusted.overlay.opaque") == b"y"
    # Exactly these changes: nothing of the mount points, nothing else of python3.11.
    python_dir = sorted(os.listdir(upper / "usr" / "lib" / "python3.11"))
    assert python_dir == sorted(Path(p).name for p in replace + delete)
    assert sorted(os.listdir(upper)) == ["usr"]
    assert sorted(os.listdir(upper / "usr")) == ["lib", "share"]
    assert sorted(os.listdir(upper / "usr" / "share")) == ["doc", "pb"]
