"""One scenario across kernels: kernel names (every package apt lists, metapackages, the user's own
build, 'host'), the version ranges bisect walks, and the matrix / compare / bisect commands.

Cost: the name and range tests run in well under a second each (apt-cache's lists, no download, no boot)."""

import shutil
import subprocess

import pytest
from conftest import cli_runner

from faultinj.cli import app
from faultinj.errors import SpecError
from faultinj.guest import kernels

runner = cli_runner()
needs_apt = pytest.mark.skipif(not shutil.which("apt-cache") or not kernels.debian_version("linux-image-6.1.0-57-amd64"),
                               reason="apt's lists do not name Debian 12's kernels here (run apt-get update)")


def _one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faultinj: error:"), r.stderr
    return lines[0]


@pytest.mark.parametrize("a,b", [
    ("6.1.170-3", "6.1.172-1"), ("6.1.192-1", "6.1.192-2"), ("6.1.192-3", "6.12.100-1~deb12u1"),
    ("6.12.115-2~deb12u1", "6.12.115-2"), ("1:1.0", "2.0"), ("1.0~rc1", "1.0"), ("1.0", "1.0+b1"),
    ("1.0a", "1.0"), ("2.0-1", "2.0-1"), ("6.12.9-1", "6.12.10-1"),
])
def test_debian_version_order_is_dpkgs(a, b):
    ours = kernels.compare_versions(a, b)
    assert ours == -kernels.compare_versions(b, a)
    if shutil.which("dpkg"):
        for op, want in (("lt", ours < 0), ("eq", ours == 0), ("gt", ours > 0)):
            assert (subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0) == want, (a, op, b)


@needs_apt
def test_every_kernel_package_form_apt_lists_resolves():
    assert kernels.package_name("linux-image-6.1.0-57-amd64") == "linux-image-6.1.0-57-amd64"
    assert kernels.package_name("linux-image-6.12.118+deb12-amd64") == "linux-image-6.12.118+deb12-amd64"
    # metapackages: the versioned package apt says they depend on today
    for meta in ("linux-image-amd64", "linux-image-6.12-amd64", "linux-image-cloud-amd64"):
        want = subprocess.run(["apt-cache", "depends", meta], capture_output=True, text=True).stdout
        got = kernels.package_name(meta)
        assert got.startswith("linux-image-") and got != meta and f"Depends: {got}" in want
    assert "cloud-amd64" in kernels.package_name("linux-image-cloud-amd64")
    host = kernels.resolve("host")
    assert host.is_host and host.label == "host" and host.vmlinuz is None


@pytest.mark.parametrize("name,needle", [
    ("not-a-kernel", "neither a vmlinuz path nor a Debian kernel package"),
    ("linux-image-6.1.0-57-amd64-dbg", "debug-symbols package"),
    ("linux-image-9.9.9-99-amd64", "cannot fetch kernel package"),
    ("linux-image-nosuch-amd64", "apt knows no kernel metapackage"),
    ("/no/such/bzImage", "not found"),
    ("/etc/hostname", "not a bootable x86 kernel image"),
])
def test_bad_kernel_names_are_one_line_exit_2(name, needle):
    with pytest.raises(SpecError, match=needle.replace(".", r"\.")):
        kernels.resolve(name)
    r = runner.invoke(app, ["doctor", "--kernel", name])
    assert r.exit_code == 2 and needle in _one_error_line(r)


def test_own_build_path_with_modules(tmp_path):
    """A bzImage's release comes from its boot header, whatever the file is called."""
    img = next(iter(sorted((kernels._cache()).glob("linux-image-*/boot/vmlinuz-*"))), None)
    if img is None:
        pytest.skip("no kernel package unpacked in the cache")
    release = img.name.removeprefix("vmlinuz-")
    shutil.copy(img, tmp_path / "bzImage")
    (tmp_path / "mods" / release).mkdir(parents=True)
    k = kernels.resolve(f"{tmp_path}/bzImage:{tmp_path}/mods")
    assert k.release == release and k.modules == tmp_path / "mods" and not k.is_host
    # the <release> directory itself is accepted too
    assert kernels.resolve(f"{tmp_path}/bzImage:{tmp_path}/mods/{release}").modules == tmp_path / "mods"
    with pytest.raises(SpecError, match="holds no"):
        kernels.resolve(f"{tmp_path}/bzImage:{tmp_path}")
    assert kernels.resolve(f"{tmp_path}/bzImage").modules is None


@needs_apt
def test_kernel_range_is_apts_versions_in_order_one_flavour():
    r = kernels.kernel_range("linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-amd64")
    names = [p for p, _ in r]
    assert names[0] == "linux-image-6.1.0-47-amd64" and names[-1] == "linux-image-6.1.0-57-amd64"
    assert all(n.endswith("-amd64") and "-cloud-" not in n and "-rt-" not in n for n in names)
    versions = [v for _, v in r]
    assert all(kernels.compare_versions(a, b) < 0 for a, b in zip(versions, versions[1:]))
    # newer first: the same list reversed; metapackages resolve; 6.1 -> 6.12 crosses the series
    assert kernels.kernel_range("linux-image-6.1.0-57-amd64", "linux-image-6.1.0-47-amd64") == r[::-1]
    across = kernels.kernel_range("linux-image-6.1.0-56-amd64", "linux-image-6.12-amd64")
    assert across[0][0] == "linux-image-6.1.0-56-amd64" and "6.12." in across[-1][0] and len(across) > 3
    with pytest.raises(SpecError, match="different flavours"):
        kernels.kernel_range("linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-cloud-amd64")
    with pytest.raises(SpecError, match="same kernel"):
        kernels.kernel_range("linux-image-amd64", kernels.package_name("linux-image-amd64"))
