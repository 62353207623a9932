"""Facts both sides of the suite need, in one torch-free module: dataset sizes, the baseline's and the
paper method's names, the paper recipe's length, exit codes, file names and schema tags.

The report, the statistics and the CLI import this without loading torch; training code may import it
too. Only constants live here, and the one naming rule both sides share (a bench arm's name); no imports
from the rest of the suite."""

from __future__ import annotations

# Dataset sizes (train images, test images) of the official splits.
DATASET_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000)}
CIFAR10_TRAIN_IMAGES, CIFAR10_TEST_IMAGES = DATASET_SIZES["cifar10"]

BASELINE = "fp32"  # the reference every ratio and gap is taken against
REFERENCE_4BIT = "tathe4"  # the paper's method: the claim checks are about it
DEFAULT_METHODS = (BASELINE, REFERENCE_4BIT)  # what bench measures when no --method is given

# Precisions a run may train in: every method runs in full precision unless bf16 autocast is asked for.
FULL_PRECISION = "fp32"
PRECISIONS = (FULL_PRECISION, "bf16")

PAPER_RECIPE = "paper"
SHORT_RECIPE = "short"  # the converged recipe: compare's default and the report's time-to-accuracy rows
PAPER_ARCH = "vgg4bit"  # the paper's network (3,251,018 parameters); its claims are about no other
# Every network's name, torch-free (planning parents and the result schema check names without building one);
# model.ARCHS registers a class under each, in this order (a test holds them equal).
ARCH_NAMES = (PAPER_ARCH, "simpleresnet4bit")
PAPER_EPOCHS = 150  # the paper's code trains 150 epochs; its claims are about that budget

# Exit codes of `q4bench`: 0 success, 1 a gate said no (parity, compare's verdict), 2 bad input
# (a one-line message naming the file, option or value), 130 interrupted.
EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_OOM = 3  # a bench child that ran out of memory under its profile's cap

# File names the suite writes and the report looks for. A run folder: its history, checkpoint, test-set
# predictions and log; a compare (or parity) folder: its result, request, plan and per-run wall times.
HISTORY_FILE = "history.json"
CHECKPOINT_FILE = "checkpoint.pt"
PREDICTIONS_FILE = "predictions.npy"
TRAIN_LOG = "train.log"
COMPARE_FILE = "compare.json"
REQUEST_FILE = "request.json"
PLAN_FILE = "plan.json"
WALL_FILE = "wall.json"
VERIFY_FILE = "verify.json"
PARITY_FILE = "parity.json"
ONNX_FILES = ("fp32", "int4", "int8")  # q4bench export writes <name>.onnx of each; verify-onnx checks them

# A compare result's "schema" field; bench results carry "schema_version" instead.
COMPARE_SCHEMA_PREFIX = "q4bench-compare/"
COMPARE_COMMAND = "q4bench compare --method tathe4 --seeds 3 --epochs 3"

# A bench arm is a method at a precision: "tathe4" (fp32) or "tathe4@bf16".
ARM_SEPARATOR = "@"


def arm_name(method: str, precision: str) -> str:
    return method if precision == FULL_PRECISION else f"{method}{ARM_SEPARATOR}{precision}"


def split_arm(arm: str) -> tuple[str, str]:
    """(method, precision) of an arm name; the inverse of arm_name."""
    method, _, precision = arm.partition(ARM_SEPARATOR)
    return method, precision or FULL_PRECISION


# A file whose "command" starts with this is generated test input, never a measurement.
FIXTURE_MARK = "fixture:"

# The conv passes bench times alone (result files' conv_kernels), in the order they run in a step.
CONV_PASSES = ("forward", "backward_data", "backward_weights")
