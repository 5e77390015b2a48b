from helix.cli import main


def test_params_prints_counts(capsys):
    assert main(["params", "--num-classes", "1313"]) == 0
    out = capsys.readouterr().out
    assert "6,718,753" in out and "6,718,248" in out and "6,715,723" in out
    assert "1543" in out and "1,056,512" in out


def test_params_rejects_bad_classes(capsys):
    assert main(["params", "--num-classes", "0"]) == 1
    assert "--num-classes must be positive" in capsys.readouterr().err


def test_models_lists_the_registry_at_a_stated_class_count(capsys):
    from helix.models import count_parameters, create_model

    assert main(["models", "--num-classes", "35"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "parameters with a 35-class head (--num-classes to change)"
    count = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in out.splitlines()[1:]}
    assert count["helix_raw"] == count_parameters(create_model("helix_raw", num_classes=35))
    assert main(["models", "--num-classes", "0"]) == 1
    assert "--num-classes must be positive" in capsys.readouterr().err
