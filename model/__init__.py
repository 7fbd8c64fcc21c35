"""M2AENet and everything needed to train and evaluate it in PyTorch.

``config`` holds the presets (``tiny``, ``base``) as dataclasses; ``layers`` the
shared building blocks (RepVGG-style convs, masked residual blocks); ``heads`` the
blur-mask predictor and the intra-frame motion analyser with its reblur operator;
``network`` the U-Net that puts them together; ``gates`` the training gates;
``receptive_field`` how far an output pixel sees. For deployment, ``reparam`` folds the
RepVGG branches and writes shuffles as strided convs (``deploy_form``) and ``pruned``
runs the folded network on block-sparse tiles through the m2ae ops (``DenseGraph``
is its dense twin); export traces both and the PyTorch engine runs them. ``data`` makes and reads training
pairs, ``train``/``evaluate`` are what ``m2ae train``/``m2ae eval`` run, and
``checkpoint`` saves and loads (``weights_only=True``) the shipped and trained weights.
"""
