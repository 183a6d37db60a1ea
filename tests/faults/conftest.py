"""The fault-injection suite shares the end-to-end fixtures: real images, real guests."""

from tests.e2e.conftest import cfg, cli_config, images, no_qemu_left_behind, pytest_collection_modifyitems, store  # noqa: F401
