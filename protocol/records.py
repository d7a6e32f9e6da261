"""Plain records for the messages an OCS handles. None means the AVP was absent."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Units:
    """Requested/Granted/Used-Service-Unit contents (RFC 8506 §8.17-8.19)."""

    time: int | None = None
    total_octets: int | None = None
    input_octets: int | None = None
    output_octets: int | None = None
    service_specific_units: int | None = None
    money_value_digits: int | None = None  # CC-Money: value = digits x 10^exponent
    money_exponent: int | None = None
    money_currency_code: int | None = None
    reporting_reason: int | None = None  # USU only (3GPP)
    tariff_change_usage: int | None = None  # USU only


@dataclass(slots=True)
class MSCCRequest:
    rating_group: int | None = None
    service_identifiers: list[int] = field(default_factory=list)
    requested: Units | None = None  # RSU present (even empty) -> Units()
    used: list[Units] = field(default_factory=list)
    reporting_reason: int | None = None  # MSCC-level 3GPP Reporting-Reason


@dataclass(slots=True)
class CCR:
    session_id: str = ""
    origin_host: str = ""
    origin_realm: str = ""
    destination_realm: str = ""
    destination_host: str | None = None
    auth_application_id: int = 4
    service_context_id: str = ""
    request_type: int = 0
    request_number: int = 0
    requested_action: int | None = None
    event_timestamp: int | None = None  # unix seconds
    subscription_ids: list[tuple[int, str]] = field(default_factory=list)
    user_name: str | None = None
    origin_state_id: int | None = None
    termination_cause: int | None = None
    multiple_services_indicator: int | None = None
    service_identifier: int | None = None
    requested: Units | None = None  # top-level RSU (EVENT without MSCC)
    used: list[Units] = field(default_factory=list)
    mscc: list[MSCCRequest] = field(default_factory=list)
    hop_by_hop: int = 0
    end_to_end: int = 0
    retransmit: bool = False


@dataclass(slots=True)
class MSCCAnswer:
    result_code: int | None = None
    rating_group: int | None = None
    service_identifier: int | None = None
    granted: Units | None = None
    validity_time: int | None = None
    quota_holding_time: int | None = None
    time_quota_threshold: int | None = None
    volume_quota_threshold: int | None = None
    final_unit_action: int | None = None  # Final-Unit-Indication present iff not None
    redirect_address_type: int | None = None
    redirect_server_address: str | None = None
    restriction_filter_rules: list[str] = field(default_factory=list)
    filter_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class FinalUnit:
    """A message-level Final-Unit-Indication (single-service answers); same fields as an MSCC's."""
    final_unit_action: int
    redirect_address_type: int | None = None
    redirect_server_address: str | None = None
    restriction_filter_rules: list[str] = field(default_factory=list)
    filter_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CostInformation:
    value_digits: int
    exponent: int
    currency_code: int
    cost_unit: str | None = None


@dataclass(slots=True)
class CCA:
    session_id: str
    result_code: int
    origin_host: str
    origin_realm: str
    request_type: int
    request_number: int
    auth_application_id: int = 4
    mscc: list[MSCCAnswer] = field(default_factory=list)
    granted: Units | None = None  # top-level GSU
    cost_information: CostInformation | None = None
    check_balance_result: int | None = None
    credit_control_failure_handling: int | None = None
    origin_state_id: int | None = None
    error_message: str | None = None
    failed_avp: bytes | None = None  # AVP bytes to wrap in Failed-AVP
    event_timestamp: int | None = None
    final_unit: FinalUnit | None = None  # single-service: the FUI of the one grant
    validity_time: int | None = None     # single-service: the Validity-Time of the one grant


@dataclass(slots=True)
class CER:
    origin_host: str
    origin_realm: str
    host_ip_addresses: list[str] = field(default_factory=list)
    vendor_id: int = 0
    product_name: str = ""
    origin_state_id: int | None = None
    supported_vendor_ids: list[int] = field(default_factory=list)
    auth_application_ids: list[int] = field(default_factory=list)
    acct_application_ids: list[int] = field(default_factory=list)
    vendor_specific_application_ids: list[tuple[int, int | None, int | None]] = field(
        default_factory=list
    )
    inband_security_ids: list[int] = field(default_factory=list)
    firmware_revision: int | None = None


@dataclass(slots=True)
class CEA:
    result_code: int
    origin_host: str
    origin_realm: str
    host_ip_addresses: list[str] = field(default_factory=list)
    vendor_id: int = 0
    product_name: str = ""
    origin_state_id: int | None = None
    supported_vendor_ids: list[int] = field(default_factory=list)
    auth_application_ids: list[int] = field(default_factory=list)
    acct_application_ids: list[int] = field(default_factory=list)
    vendor_specific_application_ids: list[tuple[int, int | None, int | None]] = field(
        default_factory=list
    )
    inband_security_ids: list[int] = field(default_factory=list)
    firmware_revision: int | None = None
    error_message: str | None = None
    failed_avp: bytes | None = None


@dataclass(slots=True)
class DWR:
    origin_host: str
    origin_realm: str
    origin_state_id: int | None = None


@dataclass(slots=True)
class DWA:
    result_code: int
    origin_host: str
    origin_realm: str
    origin_state_id: int | None = None
    error_message: str | None = None
    failed_avp: bytes | None = None


@dataclass(slots=True)
class DPR:
    origin_host: str
    origin_realm: str
    disconnect_cause: int = 0


@dataclass(slots=True)
class DPA:
    result_code: int
    origin_host: str
    origin_realm: str
    error_message: str | None = None
    failed_avp: bytes | None = None
