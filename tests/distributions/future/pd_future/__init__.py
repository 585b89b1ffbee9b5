"""A plugin written for a driver interface this core does not implement yet."""

from pd_thirdparty import ThirdPartyDriver


class FutureDriver(ThirdPartyDriver):
    """Claims interface 2.0."""

    name = "future"
    interface_version = "2.0"
