"""Guests: QEMU VMs running a kernel of the user's choice (Debian packages or a
vmlinuz), booted with virtme-ng over this machine's root filesystem, and the
agent that drives faultinj inside a guest or on a machine reached by SSH."""
