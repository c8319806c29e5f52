"""A check shared by the head tests: a head must learn well-separated classes."""

import torch

from avar.methods.avarnet.loss import avarnet_loss


def assert_head_learns(head, video, audio, mask, labels, *, lr: float, iterations: int) -> None:
    """Adam on the AVAR-Net loss: clip accuracy above 0.9 and the loss at least halved."""
    optimiser = torch.optim.Adam(head.parameters(), lr=lr)
    with torch.no_grad():
        first_loss = avarnet_loss(head(video, audio, mask), labels, mask).item()
    for _ in range(iterations):
        optimiser.zero_grad()
        loss = avarnet_loss(head(video, audio, mask), labels, mask)
        loss.backward()
        optimiser.step()
    head.eval()
    with torch.no_grad():
        accuracy = (head(video, audio, mask).clip_logits.argmax(-1) == labels).float().mean()
    assert accuracy > 0.9
    assert loss.item() < first_loss / 2
