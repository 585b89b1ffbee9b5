"""One of two distributions that both register the driver name 'twin'."""

from pd_thirdparty import ThirdPartyDriver


class TwinDriver(ThirdPartyDriver):
    """Twin b."""

    name = "twin"
