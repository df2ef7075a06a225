"""The CPU name benchmarks record: chips that share a model name must not read alike."""

from __future__ import annotations

from ragsvc.cpu_identity import cpu_name, describe_cpu

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu avx512f

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
"""


def test_the_family_model_and_stepping_follow_the_name():
    assert describe_cpu(ZEN4) == "AMD EPYC (family 25 model 17 stepping 1)"
    zen5 = ZEN4.replace("cpu family\t: 25", "cpu family\t: 26").replace("model\t\t: 17", "model\t\t: 2")
    assert describe_cpu(zen5) == "AMD EPYC (family 26 model 2 stepping 1)"
    assert describe_cpu(zen5) != describe_cpu(ZEN4)


def test_only_the_first_processor_is_read():
    mixed = ZEN4 + "\nprocessor\t: 2\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: Other\nstepping\t: 9\n"
    assert describe_cpu(mixed) == "AMD EPYC (family 25 model 17 stepping 1)"


def test_missing_fields_are_left_out_not_invented():
    assert describe_cpu("model name\t: Some CPU\n") == "Some CPU"
    assert describe_cpu("cpu family\t: 6\nmodel\t\t: 143\n") == "unknown (family 6 model 143)"
    assert describe_cpu("") == "unknown"
    assert describe_cpu("\n\nprocessor\t: 0\nmodel name\t: X\nstepping\t: 4\n") == "X (stepping 4)"


def test_benchmarks_and_kernel_plans_name_this_machine_alike():
    from ragsvc.bench.provenance import cpu_model
    from ragsvc.serving.layers.cpu_tuning import cpu_info

    assert cpu_name().strip() != ""
    assert cpu_model() == cpu_info().model == cpu_name()
