"""A library call that sets torch's thread count restores it after."""

import pytest
import torch

from suite.errors import UserError
from suite.threads import torch_threads


def test_thread_count_is_restored_after_the_block_even_on_error():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(UserError):
        with torch_threads(1):
            raise UserError("x")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
