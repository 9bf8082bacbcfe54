"""Pretraining a small SAM from scratch, here, on scenes made from photos that ship with
the project: the model behind `pretrained:small`.

No SAM weights can be downloaded on the machines this project is built on, so the demo, the
web page and the small-scale experiments need a SAM trained here. `pretrain(config,
workdir)` runs SAM's interactive training (the SUM trainer's loop, `sum_jax.train.loop`,
without task prompts, pseudo-labels or uncertainty) on `scenes.make_scene_dataset`, measures
the result on held-out real photos (`heldout`), and ships it as a packed model directory
with a manifest (`ship`). Modules:

    assets.py    the real pixels: cut-out objects, backgrounds, and what is held out
    shapes.py    procedural objects: forms (holes, thin and branching structures) and fills
    scenes.py    scene `i` = f(seed, i): objects pasted onto backgrounds, with their masks
    heldout.py   the held-out real photos and their evaluation (mIoU per click)
    training.py  `pretrain`: train, evaluate, ship
"""
