"""What the benchmark scripts share: evenly spaced view indices, --eval-split, the machine's description."""

from __future__ import annotations

import argparse

from mri_nerfstudio.benchmarking import add_eval_split_argument, cpu_model, evenly_spaced, machine_info


def test_evenly_spaced_indices_span_the_range_and_never_repeat():
    assert evenly_spaced(43, 5) == [0, 10, 21, 32, 42]
    assert evenly_spaced(3, 12) == [0, 1, 2]


def test_eval_split_is_test_unless_asked():
    parser = argparse.ArgumentParser()
    add_eval_split_argument(parser)
    assert parser.parse_args([]).eval_split == "test" and parser.parse_args(["--eval-split", "val"]).eval_split == "val"


def test_machine_info_names_what_the_figures_depend_on():
    assert {"platform", "cpu_count", "torch", "torch_threads", "device", "load_average"} <= machine_info().keys()
    assert isinstance(cpu_model(), str) and cpu_model()
