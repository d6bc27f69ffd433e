"""Every registered model type has a configuration section and vice versa, so a YAML file can name any of them."""

from twin.config.models import MODEL_CONFIGS, model_section_type
from twin.models.registry import model_types


def test_models_and_config_sections_match():
    model_section_type()  # registers the built-in configuration classes
    config_types = {cls.model_fields["type"].annotation.__args__[0] for cls in MODEL_CONFIGS}
    registered = set(model_types())
    assert registered == config_types
    for name, cls in model_types().items():
        assert cls.type_name == name
        assert callable(getattr(cls, "from_config", None)), name
