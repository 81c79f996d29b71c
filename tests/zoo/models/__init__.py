"""The zoo's architectures, one module per family, built only from torch.nn and the
stand-ins of ``tests.zoo.ecosystem``: resnet, mobilenetv2, densenet, convnext (torchvision
layouts); efficientnet (EfficientNet, MobileNetV3), convnext (timm ConvNeXt / V2), vit,
swin, levit, resnetv2 (BiT, FRN, EvoNorm), poolformer (timm layouts); normmix (the zoo's
own). ``tests.zoo.registry.ZOO`` names them and gives their test / bench configurations.
"""
