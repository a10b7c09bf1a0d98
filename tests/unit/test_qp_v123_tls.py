"""``QUEUE_PROXY_TLS_*`` applied to the TLS serving port's context (Knative 1.15+)."""

from __future__ import annotations

import ssl

import pytest

from queueproxy.tlsconfig import (
    CIPHER_SUITES,
    LEGACY,
    TlsSettings,
    TlsSettingsError,
    parse_tls_settings,
)


def context(settings: TlsSettings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    settings.apply(ctx)
    return ctx


def test_empty_variables_mean_tls13_minimum_and_no_maximum() -> None:
    settings = parse_tls_settings({"QUEUE_PROXY_TLS_MIN_VERSION": ""})
    assert settings == TlsSettings()
    ctx = context(settings)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED


def test_legacy_settings_keep_v1102_minimum() -> None:
    assert context(LEGACY).minimum_version == ssl.TLSVersion.TLSv1_2


def test_versions_and_tls12_suites_are_applied() -> None:
    settings = parse_tls_settings(
        {
            "QUEUE_PROXY_TLS_MIN_VERSION": "1.2",
            "QUEUE_PROXY_TLS_MAX_VERSION": "1.2",
            "QUEUE_PROXY_TLS_CIPHER_SUITES": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,"
            "TLS_AES_128_GCM_SHA256",
        }
    )
    ctx = context(settings)
    assert (ctx.minimum_version, ctx.maximum_version) == (
        ssl.TLSVersion.TLSv1_2,
        ssl.TLSVersion.TLSv1_2,
    )
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == {"ECDHE-RSA-AES128-GCM-SHA256"}


def test_every_go_suite_name_maps_to_a_cipher_openssl_knows() -> None:
    for go_name, openssl_name in CIPHER_SUITES.items():
        if openssl_name is None:
            assert go_name.startswith("TLS_AES_") or go_name.startswith("TLS_CHACHA20")
            continue
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.set_ciphers(openssl_name)  # raises SSLError for a name OpenSSL lacks


def test_only_tls13_suites_leave_the_tls12_list_alone() -> None:
    default = {c["name"] for c in context(TlsSettings()).get_ciphers()}
    only13 = TlsSettings(cipher_suites=("TLS_AES_256_GCM_SHA384",))
    assert {c["name"] for c in context(only13).get_ciphers()} == default


def test_a_custom_prefix_names_its_own_variable() -> None:
    with pytest.raises(TlsSettingsError, match=r"^invalid value for ACTIVATOR_TLS_MIN_VERSION: "):
        parse_tls_settings({"ACTIVATOR_TLS_MIN_VERSION": "1.0"}, prefix="ACTIVATOR_")
