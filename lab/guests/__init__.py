"""Guests: images from Debian packages, the QEMU owner, SSH, boot, smoke and doctor checks."""
