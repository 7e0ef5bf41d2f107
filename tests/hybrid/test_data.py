"""The hybrid's split written as datasets, for the models trained by ``cellax train`` and ``cellax fit``."""

import numpy as np
import pytest

from cellax.data.loader import iterate_profiles
from cellax.data.store import StoreError, open_dataset
from cellax.hybrid.data import config_split, load_profiles, write_split


def test_write_split_holds_exactly_the_profiles_of_each_set(hybrid_config, tmp_path):
    profiles, _ = load_profiles(hybrid_config.data)
    rows = config_split(hybrid_config, profiles)
    files = write_split(hybrid_config, tmp_path)
    assert sorted(files) == ["holdout", "test", "train"]
    seen = []
    for name, path in files.items():
        with open_dataset(path) as ds, open_dataset(hybrid_config.data) as source:
            ids = ds.profiles["profile_id"].tolist()
            assert ids == profiles.profile_id[rows[name]].tolist()
            assert ds.config == source.config and ds.attrs["subset_of"]["fingerprint"] == source.fingerprint
            for item, row in zip(iterate_profiles(ds, range(len(ds)), ["voltage_v", "anode_potential_v"]), rows[name]):
                n = int(profiles.mask[row].sum())
                np.testing.assert_array_equal(item["voltage_v"], profiles.targets["voltage_v"][row, :n])
                np.testing.assert_array_equal(item["anode_potential_v"], profiles.targets["anode_potential_v"][row, :n])
        seen += ids
    assert sorted(seen) == sorted(profiles.profile_id.tolist())
    with pytest.raises(StoreError, match="exists"):
        write_split(hybrid_config, tmp_path)


def test_split_seed_keeps_the_held_out_set_across_training_seeds(hybrid_config):
    from types import SimpleNamespace

    class Many(SimpleNamespace):  # the two fields the split reads, for 200 profiles
        def __len__(self):
            return len(self.profile_id)

    profiles = Many(profile_id=np.arange(200), ambient_temp_degc=np.linspace(0.0, 45.0, 200))

    def rows(seed, split_seed=None):
        config = hybrid_config.model_copy(update={"seed": seed, "split": hybrid_config.split.model_copy(
            update={"seed": split_seed})})
        return config_split(config, profiles)

    assert not np.array_equal(rows(0)["test"], rows(1)["test"])  # by default the run's seed draws the test set
    for name in ("train", "test", "holdout"):
        np.testing.assert_array_equal(rows(1, split_seed=0)[name], rows(0)[name])
