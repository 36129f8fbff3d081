import pytest
import torch

from vae_lab.errors import VaeLabError
from conftest import make_model
from vae_lab.models import CVAE, ConvVAE, DenseVAE, build_model

MODELS = {"dense": DenseVAE, "conv": ConvVAE, "cvae": CVAE}
# Parameter counts of the reference course project's models at z_dim=20.
REFERENCE_PARAMETERS = {"dense": 476_216, "conv": 826_424, "cvae": 330_824}


def labels_for(model, n):
    return torch.arange(n) % 10  # every model takes labels; unconditional ones ignore them


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_matches_reference(name):
    model = make_model(name, z_dim=20)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMETERS[name]


@pytest.mark.parametrize("z_dim", [2, 20])
@pytest.mark.parametrize("name", MODELS)
def test_shapes(name, z_dim):
    model = make_model(name, z_dim=z_dim)
    x, y = torch.rand(5, 1, 28, 28), labels_for(model, 5)
    mu, logvar = model.encode(x, y)
    assert mu.shape == logvar.shape == (5, z_dim)
    assert model.decode(mu, y).shape == (5, 1, 28, 28)
    logits, mu2, logvar2 = model(x, y)
    assert logits.shape == (5, 1, 28, 28) and mu2.shape == logvar2.shape == (5, z_dim)
    samples = model.sample(7, labels_for(model, 7))
    assert samples.shape == (7, 1, 28, 28)
    assert samples.min() >= 0 and samples.max() <= 1


def test_conv_encoder_keeps_4x14x14_before_flatten():
    convolutions = make_model("conv").encoder[:6]
    assert convolutions(torch.rand(2, 1, 28, 28)).shape == (2, 4, 14, 14)


@pytest.mark.parametrize("name", MODELS)
def test_sample_applies_sigmoid_exactly_once(name):
    model = make_model(name, z_dim=3)
    with torch.no_grad():  # push logits far from 0 so a second sigmoid would show
        model.decoder[-1].bias.fill_(-6.0)
    y = labels_for(model, 4)
    torch.manual_seed(1)
    samples = model.sample(4, y)
    torch.manual_seed(1)
    expected = torch.sigmoid(model.decode(torch.randn(4, 3), y))
    torch.testing.assert_close(samples, expected)
    assert samples.max() < 0.05  # sigmoid(sigmoid(.)) would be >= 0.5


def test_cvae_needs_labels_and_uses_them():
    model = make_model("cvae", z_dim=2)
    with pytest.raises(ValueError, match="labels"):
        model.encode(torch.rand(2, 1, 28, 28))
    z = torch.zeros(2, 2)
    three, seven = model.decode(z, torch.tensor([3, 3])), model.decode(z, torch.tensor([7, 7]))
    assert not torch.allclose(three, seven)


def test_reparameterize_has_the_posterior_moments():
    torch.manual_seed(0)
    mu, logvar = torch.tensor([[1.5, -2.0]]).expand(200_000, 2), torch.tensor([[0.0, -2.0]]).expand(200_000, 2)
    z = DenseVAE.reparameterize(mu, logvar)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.5, -2.0]), atol=0.01, rtol=0)
    torch.testing.assert_close(z.var(0), torch.tensor([1.0, torch.exp(torch.tensor(-2.0)).item()]), atol=0.01, rtol=0.02)


def test_build_model_chooses_by_name_and_checks_every_argument():
    model = make_model(z_dim=5, hidden=[64, 32])
    assert isinstance(model, DenseVAE) and model.z_dim == 5
    assert [m.out_features for m in model.encoder if isinstance(m, torch.nn.Linear)] == [64, 32]
    assert sum(p.numel() for p in make_model("conv", z_dim=20).parameters()) == 826_424
    refused = {
        "model.name=transformer is not a registered model (registered: dense, conv, cvae, hvae)": {"name": "transformer"},
        "model._target_=os.system names code; a model is chosen by model.name": {"_target_": "os.system"},
        "model.width: model dense has no such setting (its settings: z_dim, hidden)": {"name": "dense", "width": 3},
        "model.z_dim=0 must be an integer >= 1": {"name": "dense", "z_dim": 0},
        "model.z_dim=abc must be an integer >= 1": {"name": "cvae", "z_dim": "abc"},
        "model.hidden=[256, 0] must be a list of integers >= 1": {"name": "dense", "hidden": [256, 0]},
        "model.hidden={'_target_': 'os.system'} must be": {"name": "dense", "hidden": {"_target_": "os.system"}},
        "model.channels=[4, 4] must be a list of 3 integers >= 1": {"name": "conv", "channels": [4, 4]},
        "model.image_shape=[3, 9, 9]: image_shape comes from the run": {"name": "conv", "image_shape": [3, 9, 9]},
    }
    for message, config in refused.items():
        with pytest.raises(VaeLabError) as error:
            build_model({"model": config})
        assert str(error.value).startswith(message)
    with pytest.raises(VaeLabError, match=r"prior.name=wide is not a registered prior"):
        build_model({"model": {"name": "dense"}, "prior": {"name": "wide"}})
    with pytest.raises(VaeLabError, match=r"^prior vamp: the conditional model's encoder needs labels, which its "
                                          r"pseudo-inputs do not have; use prior=standard or prior=mog with it$"):
        build_model({"model": {"name": "cvae"}, "prior": {"name": "vamp"}})
    with pytest.raises(VaeLabError, match=r"^prior.model=dense: model comes from the run"):
        build_model({"model": {"name": "dense"}, "prior": {"name": "vamp", "model": "dense"}})


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 64, 64), (3, 9, 13)])
@pytest.mark.parametrize("name", ["dense", "conv"])
def test_models_take_the_image_shape_of_the_data(name, shape):
    model = build_model({"model": {"name": name, "z_dim": 4}, "data": {"image_shape": list(shape), "num_classes": 0}})
    x = torch.rand(2, *shape)
    logits, mu, _ = model(x)
    assert logits.shape == x.shape and mu.shape == (2, 4)
    assert model.sample(3).shape == (3, *shape)


def test_conv_refuses_an_image_size_it_cannot_handle_in_one_line():
    for shape, problem in {(1, 3, 40): "too small", (3, 128, 128): "decoder layer"}.items():
        with pytest.raises(VaeLabError) as error:
            build_model({"model": {"name": "conv"}, "data": {"image_shape": list(shape), "num_classes": 0}})
        assert "x".join(map(str, shape)) in str(error.value) and problem in str(error.value)
        assert "\n" not in str(error.value)


def test_the_cvae_takes_its_classes_from_the_data_and_refuses_unlabelled_data():
    model = build_model({"model": {"name": "cvae", "z_dim": 2}, "data": {"image_shape": [1, 28, 28], "num_classes": 4}})
    assert model.encoder[0].in_features == 784 + 4
    with pytest.raises(VaeLabError, match="needs labelled data"):
        build_model({"model": {"name": "cvae"}, "data": {"image_shape": [1, 28, 28], "num_classes": 0}})


def test_dense_hidden_widths_set_the_layers_and_keep_the_reference_by_default():
    wide = make_model(z_dim=50, hidden=[200, 200])
    # 784-200-200-(50+50) and 50-200-200-784
    expected = (784 * 200 + 200) + (200 * 200 + 200) + 2 * (200 * 50 + 50) + (50 * 200 + 200) + (200 * 200 + 200) + (200 * 784 + 784)
    assert sum(p.numel() for p in wide.parameters()) == expected
    assert sum(p.numel() for p in make_model().parameters()) == REFERENCE_PARAMETERS["dense"]


@pytest.mark.parametrize("name", ["dense", "conv"])
def test_unconditional_models_take_labels_and_ignore_them(name):
    model, x = make_model(name, z_dim=3), torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(model.encode(x, torch.tensor([0, 1, 2, 3])), model.encode(x))
