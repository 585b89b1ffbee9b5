"""Test-support helpers for the libvirt plugin (tiny guest image, libvirtd harness)."""
