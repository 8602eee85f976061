"""Flax modules for the figures: ResNet-20 (v1) and a small MLP.

Modules only: no losses, no optimisers. Every ReLU output is sown into the ``relu``
collection so that activation patterns (Fort et al. 2020, section 2) can be read with
``model.apply(variables, x, mutable=["relu"])``.

The convolutional models take ``conv``, the implementation of their convolutions
(``ntkpaper.conv``): ``"xla"`` (default, Flax's ``nn.Conv``), ``"patches"``, ``"loop"`` or
``"wgrad_loop"``, equal in value and parameters, faster for vmapped children.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ntkpaper import conv as conv_lib


def relu(module: nn.Module, x: jax.Array) -> jax.Array:
    """ReLU whose output is recorded in the ``relu`` collection of ``module``."""
    y = nn.relu(x)
    module.sow("relu", "out", y)
    return y


def Conv(impl: str, features: int, kernel_size: tuple[int, int], **kwargs) -> nn.Conv:
    """Flax's ``nn.Conv`` computed by implementation ``impl`` of ``conv.IMPLEMENTATIONS``:
    ``"xla"``, Flax's own, or one whose derivatives stay fast when children are vmapped. The
    same module, parameter names and shapes whatever ``impl``."""
    return nn.Conv(
        features, kernel_size, conv_general_dilated=conv_lib.conv_general_dilated(impl), **kwargs
    )


INITS = {
    "he": nn.initializers.he_normal(),  # variance 2 / fan_in (He et al. 2015), the CIFAR ResNets'
    "lecun": nn.initializers.lecun_normal(),  # variance 1 / fan_in, Flax's default
}


class Norm(nn.Module):
    """Batch norm, or the identity when ``enabled`` is False (ResNet-20 without BN)."""

    enabled: bool = True
    momentum: float = 0.9

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if not self.enabled:
            return x
        return nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=1e-5)(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut (He et al. 2016, option A).

    When the block halves the resolution, the shortcut subsamples by 2 and pads the new
    channels with zeros, so the shortcut has no parameters, as in the CIFAR ResNets.
    """

    channels: int
    stride: int
    batch_norm: bool
    bn_momentum: float
    weight_init: str = "he"
    conv: str = "xla"  # convolution implementation: conv.IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = lambda s: Conv(  # noqa: E731
            self.conv,
            self.channels,
            (3, 3),
            strides=(s, s),
            padding="SAME",
            use_bias=not self.batch_norm,
            kernel_init=INITS[self.weight_init],
        )
        y = conv(self.stride)(x)
        y = relu(self, Norm(self.batch_norm, self.bn_momentum)(y, train))
        y = conv(1)(y)
        y = Norm(self.batch_norm, self.bn_momentum)(y, train)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.channels:
            shortcut = x[:, :: self.stride, :: self.stride, :]
            extra = self.channels - x.shape[-1]
            shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
        return relu(self, y + shortcut)


class ResNet(nn.Module):
    """ResNet for CIFAR (He et al. 2016, section 4.2): depth 6n + 2, widths 16, 32, 64.

    ResNet-20 is ``depth=20``. ``width`` multiplies every channel count; ``batch_norm=False``
    is the "RN20 no BN" of Fort et al. appendix D.1.

    Args of ``__call__``: x: (n, H, W, C) images (32x32 CIFAR or 8x8 digits), train: batch
    statistics (True) or running averages (False). Returns (n, num_classes) logits.
    """

    num_classes: int
    depth: int = 20
    width: float = 1.0
    batch_norm: bool = True
    bn_momentum: float = 0.9
    weight_init: str = "he"  # weights of convolutions and the dense layer: INITS
    conv: str = "xla"  # convolution implementation: conv.IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if (self.depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n + 2, got {self.depth}")
        conv_lib.check(self.conv)
        n = (self.depth - 2) // 6
        channels = [max(1, round(c * self.width)) for c in (16, 32, 64)]
        k = INITS[self.weight_init]
        x = Conv(
            self.conv,
            channels[0],
            (3, 3),
            padding="SAME",
            use_bias=not self.batch_norm,
            kernel_init=k,
        )(x)
        x = relu(self, Norm(self.batch_norm, self.bn_momentum)(x, train))
        for stage, c in enumerate(channels):
            for block in range(n):
                stride = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(
                    c, stride, self.batch_norm, self.bn_momentum, self.weight_init, conv=self.conv
                )(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=k)(x)


class WideBlock(nn.Module):
    """Pre-activation block of a Wide ResNet: BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus shortcut
    (a 1x1 convolution when the shape changes, else the identity)."""

    channels: int
    stride: int
    bn_momentum: float
    weight_init: str = "he"
    conv: str = "xla"  # convolution implementation: conv.IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        k = INITS[self.weight_init]
        y = relu(self, Norm(True, self.bn_momentum)(x, train))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.channels:
            shortcut = Conv(
                self.conv,
                self.channels,
                (1, 1),
                strides=(self.stride, self.stride),
                use_bias=False,
                kernel_init=k,
            )(y)
        y = Conv(
            self.conv,
            self.channels,
            (3, 3),
            strides=(self.stride, self.stride),
            padding="SAME",
            use_bias=False,
            kernel_init=k,
        )(y)
        y = relu(self, Norm(True, self.bn_momentum)(y, train))
        y = Conv(self.conv, self.channels, (3, 3), padding="SAME", use_bias=False, kernel_init=k)(y)
        return y + shortcut


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko and Komodakis 2016; Fort et al. appendix D.1: WRN-16-4, no
    dropout): depth 6n + 4, group widths 16k, 32k, 64k.

    Args of ``__call__``: x: (n, H, W, C), train. Returns (n, num_classes) logits.
    """

    num_classes: int
    depth: int = 16
    width: float = 4.0
    batch_norm: bool = True
    bn_momentum: float = 0.9
    weight_init: str = "he"
    conv: str = "xla"  # convolution implementation: conv.IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv_lib.check(self.conv)
        if (self.depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n + 4, got {self.depth}")
        if not self.batch_norm:
            raise ValueError("the Wide ResNet here always has batch norm")
        n = (self.depth - 4) // 6
        k = INITS[self.weight_init]
        x = Conv(self.conv, 16, (3, 3), padding="SAME", use_bias=False, kernel_init=k)(x)
        for group, c in enumerate((16, 32, 64)):
            for block in range(n):
                stride = 2 if group > 0 and block == 0 else 1
                c_k = max(1, round(c * self.width))
                x = WideBlock(c_k, stride, self.bn_momentum, self.weight_init, conv=self.conv)(
                    x, train
                )
        x = relu(self, Norm(True, self.bn_momentum)(x, train))
        return nn.Dense(self.num_classes, kernel_init=k)(jnp.mean(x, axis=(1, 2)))


class SimpleCNN(nn.Module):
    """Fort et al. appendix D.1: six 3x3 convolutions (stride 1, with bias) of 32, 32, 64, 64,
    128, 128 channels, each followed by a ReLU, 2x2 max pooling (stride 2) after the 2nd, 4th
    and 6th, global average pooling, a dense layer. Kaiming (He) initialisation, zero biases.
    ``width`` multiplies every channel count. No batch norm."""

    num_classes: int
    width: float = 1.0
    weight_init: str = "he"
    conv: str = "xla"  # convolution implementation: conv.IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv_lib.check(self.conv)
        k = INITS[self.weight_init]
        for i, c in enumerate((32, 32, 64, 64, 128, 128)):
            x = relu(self, Conv(self.conv, max(1, round(c * self.width)), (3, 3), padding="SAME",
                                kernel_init=k)(x))  # fmt: skip
            if i % 2:
                x = nn.max_pool(x, (2, 2), (2, 2), padding="SAME")
        return nn.Dense(self.num_classes, kernel_init=k)(jnp.mean(x, axis=(1, 2)))


class MLP(nn.Module):
    """Fully connected ReLU network: x -> Dense -> ReLU -> ... -> Dense(num_classes).

    Args of ``__call__``: x: (n, ...) flattened to (n, d). Returns (n, num_classes).
    """

    num_classes: int
    hidden: Sequence[int] = (256,)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for h in self.hidden:
            x = relu(self, nn.Dense(h)(x))
        return nn.Dense(self.num_classes)(x)


def build(name: str, num_classes: int, **kwargs) -> nn.Module:
    """The model named in a parameter file (``model.name``): ``resnet``, ``wrn``, ``simplecnn``
    (its depth is 6, no batch norm) or ``mlp``."""
    if name == "resnet":
        return ResNet(num_classes=num_classes, **kwargs)
    if name == "wrn":
        return WideResNet(num_classes=num_classes, **kwargs)
    if name == "mlp":
        return MLP(num_classes=num_classes, **kwargs)
    if name == "simplecnn":
        kwargs.pop("depth", None), kwargs.pop("batch_norm", None)
        return SimpleCNN(num_classes=num_classes, **kwargs)
    raise ValueError(f"unknown model {name!r}")


_LOGITS: dict = {}


def logits(model: nn.Module) -> Callable:
    """``f(params, x, batch_stats) -> (n, K)``: the network in evaluation mode.

    The one evaluation-mode apply (batch norm with the given statistics), shared by
    predictions, kernels and Taylor models; one function object per model, so compiled
    programs are reused.
    """
    return _LOGITS.setdefault(
        model,
        lambda params, x, batch_stats: model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=False
        ),
    )


_logits_jit = jax.jit(lambda model, p, x, s: logits(model)(p, x, s), static_argnums=0)


def predict(model: nn.Module, variables: dict, x: jax.Array, batch_size: int) -> jax.Array:
    """Logits (n, K) of ``x`` (n, ...) in evaluation mode, ``batch_size`` at a time."""
    p, s = variables["params"], variables.get("batch_stats", {})
    return jnp.concatenate(
        [_logits_jit(model, p, x[i : i + batch_size], s) for i in range(0, x.shape[0], batch_size)]
    )
