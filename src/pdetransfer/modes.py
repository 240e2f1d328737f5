"""The study's modes as data: what each starts from, what it trains, what it is compared with.

Every reader -- the workflow's rules, the run layout, the tables, the plots and the published
Markdown -- asks this table instead of spelling a mode's name, so that a new mode is one entry
here (plus, for a new ``trainable`` rule, the engine's rule for which parameters train).
The order of :data:`MODES` is the order of the tables' columns, the plots' legends and the
published rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pdetransfer.engine.models.registry import TRAINABLE_RULES
from pdetransfer.errors import UserError

#: What a mode's model starts from: the pre-trained checkpoint of its (pre-training, size), or
#: random weights (normalised with the downstream training set's statistics).
Start = Literal["pretrained", "random"]
#: Named rules for which parameters train: the engine's (every weight, the output projection,
#: low-rank updates), or none (the model is only evaluated).
TRAINABLE = (*TRAINABLE_RULES, "none")


@dataclass(frozen=True)
class Mode:
    """One way of getting a model for a downstream dataset."""

    name: str  # in run paths, rule names, ``sweep.modes`` and the tables' ``mode`` column
    start: Start
    trainable: str  # a rule of TRAINABLE
    #: The mode whose data need this one's is measured against (data_efficiency.csv), if any.
    baseline: str | None
    label: str  # legends and published tables
    activity: str  # its training jobs in the published compute totals ("" if it trains none)
    palette: str  # seaborn sequential palette: one shade per model size or N
    marker: str  # matplotlib marker of its curves ("" for a line that does not depend on N)

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ValueError(f"mode {self.name!r}: trainable {self.trainable!r} not in {TRAINABLE}")

    @property
    def needs_pretrained(self) -> bool:
        """Whether it needs a pre-trained checkpoint (and its runs live under that entry)."""
        return self.start == "pretrained"

    @property
    def trains(self) -> bool:
        """Whether it trains on the downstream set (a sweep over N, learning rates and seeds)."""
        return self.trainable != "none"

    @property
    def shared(self) -> bool:
        """Whether its runs depend on no pre-training, so experiments with the same downstream
        dataset share them."""
        return not self.needs_pretrained

    @property
    def train_rule(self) -> str:
        """The workflow rule that trains its runs (one name whatever ``sweep.pack`` is)."""
        return self.name

    @property
    def evaluate_rule(self) -> str:
        """The workflow rule that evaluates its runs on the test set."""
        return f"evaluate_{self.name}"

    @property
    def refine_rule(self) -> str:
        """The workflow checkpoint that decides a round of a cell's refinement (sweep.refine)."""
        return f"refine_{self.name}"

    @property
    def added_train_rule(self) -> str:
        """The workflow rule that trains the runs refinement adds to a cell."""
        return f"{self.name}_added"

    @property
    def added_evaluate_rule(self) -> str:
        """The workflow rule that evaluates the runs refinement adds to a cell."""
        return f"evaluate_{self.name}_added"

    @property
    def rules(self) -> tuple[str, ...]:
        """Every workflow rule of the mode that runs on a GPU (the SLURM profile places each
        of them; the refinement checkpoint is a local rule)."""
        if not self.trains:
            return (self.evaluate_rule,)
        return (
            self.train_rule,
            self.evaluate_rule,
            self.added_train_rule,
            self.added_evaluate_rule,
        )


MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode(
            "finetune",
            start="pretrained",
            trainable="all",
            baseline="scratch",
            label="fine-tune",
            activity="fine-tuning",
            palette="Blues",
            marker="o",
        ),
        Mode(
            "scratch",
            start="random",
            trainable="all",
            baseline=None,
            label="scratch",
            activity="training from scratch",
            palette="Oranges",
            marker="s",
        ),
        Mode(
            "head",
            start="pretrained",
            trainable="head",  # the output projection only (the FNO's head.0 and head.2)
            baseline=None,
            label="fine-tune head",
            activity="fine-tuning the head",
            palette="RdPu",  # not Greens: the mixed-physics plot draws single-system runs in it
            marker="^",
        ),
        Mode(
            "lora",
            start="pretrained",
            trainable="lora",  # rank sweep.lora_rank updates of every Fourier layer's weights
            baseline=None,
            label="LoRA",
            activity="LoRA fine-tuning",
            palette="Purples",
            marker="D",
        ),
        Mode(
            "zeroshot",
            start="pretrained",
            trainable="none",
            baseline=None,
            label="zero-shot",
            activity="",
            palette="Greys",
            marker="",
        ),
    )
}
#: Names of the modes that train (their summary cells choose a learning rate).
TRAINING = tuple(name for name, mode in MODES.items() if mode.trains)


def mode(name: str) -> Mode:
    """The mode of a name (as a run, a table or a config spells it)."""
    try:
        return MODES[name]
    except KeyError:
        raise UserError(f"unknown mode {name!r} (modes: {', '.join(MODES)})") from None


def full_finetune() -> Mode:
    """The mode the parameter-efficient modes are measured against: every weight of the
    pre-trained model trains."""
    (found,) = (m for m in MODES.values() if m.needs_pretrained and m.trainable == "all")
    return found


def comparisons() -> list[tuple[Mode, Mode]]:
    """(mode, baseline) pairs of data_efficiency.csv, in table order."""
    return [(m, MODES[m.baseline]) for m in MODES.values() if m.baseline is not None]
