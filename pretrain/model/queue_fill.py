"""A queue of real keys before the first step: an option for short runs, not the paper's recipe.

MoCo starts the queue from K random unit vectors (v1, Sec. 3.2). Against them every positive wins
at once, and the loss then climbs back towards ln(K + 1) while real keys replace them over the
first K / batch steps: in a run of a few thousand steps that hump is a sizeable part of the
schedule. ``model.queue_init: keys`` fills the queue with the key encoder's keys of real images
first, so the task is the real one from step 1 (the official CIFAR demo and the paper do not).
"""

import torch

from pretrain import distributed as du
from pretrain.model.queue import enqueue


@torch.no_grad()
def fill_queue_with_keys(model, loader, epoch, views):
    """Encode key views until the queue holds K real keys; the pointer ends back at 0.

    ``epoch``: one the run never trains on (the one after its last), so that the images' crops
    differ from those of the first steps. ``views(im_q, im_k) -> (im_q, im_k)`` puts a batch on
    the device as the training loop does. Global RNG untouched (data loaders draw seeds from it).
    Returns the number of keys written.
    """
    written = 0
    device = model.queue.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        loader.set_epoch(epoch)
        for im_q, im_k in loader:
            _, im_k = views(im_q, im_k)
            keys = du.all_gather_cat(model.encode_keys(im_k))
            enqueue(model.queue, model.queue_ptr, keys[: model.K - written])
            written += min(keys.shape[0], model.K - written)
            if written >= model.K:
                break
    model.queue_ptr.zero_()
    return written
