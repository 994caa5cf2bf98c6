"""Mask R-CNN's mask head with its convolutions run channels-last on the
CPU, where oneDNN runs them faster on the small RoI maps of the mask
branch (docs/benchmarks.md)."""
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from torch import Tensor, channels_last

from ..registry import MODELS


def cpu_channels_last(x: Tensor) -> Tensor:
    """``x`` channels-last when it lives on the CPU, else ``x`` itself.

    The values and the parameters of the convolutions that follow are
    unchanged; their outputs differ by float rounding only.
    """
    if x.device.type != 'cpu':
        return x
    return x.contiguous(memory_format=channels_last)


@MODELS.register_module()
class ChannelsLastFCNMaskHead(FCNMaskHead):
    """mmdet's ``FCNMaskHead``, its convolutions channels-last on the CPU.

    Same arguments, parameters and ``state_dict`` as ``FCNMaskHead``, so its
    checkpoints load either way; on CUDA it is ``FCNMaskHead``.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Mask logits of RoI features.

        Args:
            x (Tensor): ``(n, in_channels, s, s)`` mask RoI features.

        Returns:
            Tensor: ``(n, num_classes, 2s, 2s)`` contiguous mask logits.
        """
        return super().forward(cpu_channels_last(x)).contiguous()
