"""The Kubernetes manifests' inputs stay in step with the files they come from.

kustomize takes no wildcards, so the migration Job's ConfigMap lists each migration, and the
secretGenerators name the env files `make k8s-secrets` writes. `tests/test_k8s.py` in the
template renders and validates the manifests themselves (with kubectl).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def k8s_secrets() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_secrets", K8S / "k8s_secrets.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["k8s_secrets"] = module
    spec.loader.exec_module(module)
    return module


def test_every_migration_is_in_the_job_s_configmap() -> None:
    text = (ROOT / "deploy/db-deploy/kustomization.yaml").read_text()
    listed = sorted(re.findall(r"^\s*-\s*sql/(\S+)\s*$", text, re.MULTILINE))
    files = sorted(p.name for p in (ROOT / "deploy/db-deploy/sql").glob("*.sql"))
    assert listed == files, (
        "deploy/db-deploy/kustomization.yaml must list every file of deploy/db-deploy/sql "
        "(the Kubernetes migration Job applies only those)"
    )


def test_secret_generators_read_the_files_make_k8s_secrets_writes() -> None:
    written = {path for path, _ in k8s_secrets().FILES.values()}
    read = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        for name in re.findall(r"^\s*-\s*(secrets/\S+\.env)\s*$", kustomization.read_text(), re.M):
            read.add(kustomization.parent / name)
    assert read == written


@pytest.mark.parametrize("value", ["two\nlines", "carriage\rreturn", "nul\0"])
def test_a_secret_an_env_file_cannot_carry_is_refused(value: str) -> None:
    module = k8s_secrets()
    with pytest.raises(module.SecretsError, match="API_TOKEN holds a line break or NUL"):
        module.env_text(("API_TOKEN",), {"API_TOKEN": value})
    with pytest.raises(module.SecretsError, match=r"API_TOKEN is not set: add it to \.env"):
        module.env_text(("API_TOKEN",), {})
