"""What every task gives the rest of upo: tokens for the MDM, a training stream, rewards."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Batch:
    """Items of one task as MDM inputs. tokens [B, L] with mask_id at the positions to fill,
    answers [B, L] the reference answer, attention_mask [B, L] (False = padding)."""

    tokens: np.ndarray
    answers: np.ndarray
    attention_mask: np.ndarray
    meta: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def trimmed(self) -> Batch:
        """This batch without the leading columns that are padding in every row: a batch is
        padded to its own longest item, not to its data set's."""
        used = self.attention_mask.any(axis=0)
        lead = int(used.argmax()) if used.any() else 0
        if lead == 0:
            return self
        cut = slice(lead, None)
        return Batch(
            self.tokens[:, cut], self.answers[:, cut], self.attention_mask[:, cut], self.meta
        )

    def select(self, idx) -> Batch:
        idx = np.asarray(idx)
        return Batch(
            self.tokens[idx],
            self.answers[idx],
            self.attention_mask[idx],
            [self.meta[i] for i in idx] if self.meta else [],
        )
