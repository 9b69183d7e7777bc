"""The Paynow client and message rules: Paynow's published hash examples, the real client
against the Paynow simulator over HTTP, and every way a reply or update can be bad."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from decimal import Decimal

import httpx
import pytest

from slyker.areas.billing_settings import PaynowSettings
from slyker.services.errors import Conflict, InvalidInput, UpstreamError
from slyker.services.paynow import check_paynow_reference, transaction_status
from slyker.services.paynow_protocol import (
    InvalidHash,
    MalformedMessage,
    PaymentRequest,
    PaynowClient,
    PaynowDeclined,
    PaynowNotConfigured,
    StatusReport,
    check_mobile_method,
    hash_is_valid,
    message_hash,
    new_http_client,
    normalise_phone,
    parse_message,
    signed,
    verify_status_update,
)
from tests.paynow_simulator import INSUFFICIENT_BALANCE_PHONE, PaynowSimulator

# Paynow's documentation examples (developers.paynow.co.zw, "Generating Hash" and
# "Validating Hash"), with the integration key they were made with.
DOC_KEY = "3e9fed89-60e1-4ce5-ab6e-6b1eb2d4f977"
DOC_OUTBOUND = [
    ("id", "1201"),
    ("reference", "TEST REF"),
    ("amount", "99.99"),
    ("additionalinfo", "A test ticket transaction"),
    ("returnurl", "http://www.google.com/search?q=returnurl"),
    ("resulturl", "http://www.google.com/search?q=resulturl"),
    ("status", "Message"),
]
DOC_OUTBOUND_HASH = (
    "2A033FC38798D913D42ECB786B9B19645ADEDBDE788862032F1BD82CF3B92DEF"
    "84F316385D5B40DBB35F1A4FD7D5BFE73835174136463CDD48C9366B0749C689"
)
DOC_INBOUND = (
    "status=Ok&browserurl=https%3a%2f%2fstaging.paynow.co.zw%2fPayment%2fConfirmPayment%2f9510"
    "&pollurl=https%3a%2f%2fstaging.paynow.co.zw%2fInterface%2fCheckPayment%2f%3fguid%3d"
    "c7ed41da-0159-46da-b428-69549f770413&paynowreference=9510&hash=750DD0B0DF374678707BB5AF915A"
    "F81C228B9058AD57BB7120569EC68BBB9C2EFC1B26C6375D2BC562AC909B3CD6B2AF1D42E1A5E479FFAC8F4FB3"
    "FDCE71DF4D"
)


# --- hashes and messages --------------------------------------------------------------------


def test_outbound_hash_matches_paynows_example() -> None:
    assert message_hash((value for _, value in DOC_OUTBOUND), DOC_KEY) == DOC_OUTBOUND_HASH
    assert signed(DOC_OUTBOUND, DOC_KEY)[-1] == ("hash", DOC_OUTBOUND_HASH)


def test_inbound_example_verifies_and_any_change_breaks_it() -> None:
    fields = parse_message(DOC_INBOUND)
    assert hash_is_valid(fields, DOC_KEY)
    assert not hash_is_valid(fields, DOC_KEY.replace("3", "4"))
    tampered = [(n, "9511" if n == "paynowreference" else v) for n, v in fields]
    assert not hash_is_valid(tampered, DOC_KEY)
    reordered = [fields[1], fields[0], *fields[2:]]
    assert not hash_is_valid(reordered, DOC_KEY)  # the order of the values is signed too
    assert not hash_is_valid([f for f in fields if f[0] != "hash"], DOC_KEY)


def test_field_names_are_case_insensitive_as_in_paynows_replies() -> None:
    fields = parse_message("Status=Ok&BrowserUrl=http%3a%2f%2fx%2f1&Hash=AB")
    assert fields == [("status", "Ok"), ("browserurl", "http://x/1"), ("hash", "AB")]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"status=Ok&status=Paid&hash=AB", id="repeated-field"),
        pytest.param(b"reference=a%00b&hash=AB", id="nul"),
        pytest.param(b"reference=a%0Ab&hash=AB", id="newline"),
        pytest.param(b"reference=\xff\xfe", id="not-utf8"),
        pytest.param(b"just some text", id="not-urlencoded"),
        pytest.param(b"reference=" + b"a" * 20000, id="too-long"),
    ],
)
def test_unreadable_messages_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_message(body)


def status_update(key: str, **changes: str) -> str:
    fields = {
        "reference": "INV-000001-P1",
        "paynowreference": "9510",
        "amount": "29.99",
        "status": "Paid",
        "pollurl": "https://www.paynow.co.zw/interface/checkpayment/?guid=x",
    } | changes
    return "&".join(f"{name}={value}" for name, value in signed(list(fields.items()), key)).replace(
        " ", "+"
    )


def test_a_signed_status_update_is_read() -> None:
    report = verify_status_update(status_update(DOC_KEY).encode(), DOC_KEY)
    assert report.reference == "INV-000001-P1" and report.paynow_reference == "9510"
    assert report.amount == Decimal("29.99") and report.is_paid and not report.is_failed
    delivered = verify_status_update(status_update(DOC_KEY, status="Awaiting Delivery"), DOC_KEY)
    assert delivered.is_paid  # paid, funds in suspense
    cancelled = verify_status_update(status_update(DOC_KEY, status="Cancelled"), DOC_KEY)
    assert cancelled.is_failed and not cancelled.is_paid


def test_a_forged_or_unsigned_status_update_is_refused() -> None:
    with pytest.raises(InvalidHash):
        verify_status_update(status_update("another-key"), DOC_KEY)
    unsigned = "reference=INV-000001-P1&amount=29.99&status=Paid"
    with pytest.raises(InvalidHash):
        verify_status_update(unsigned, DOC_KEY)
    signed_then_changed = status_update(DOC_KEY).replace("amount=29.99", "amount=0.01")
    with pytest.raises(InvalidHash):
        verify_status_update(signed_then_changed, DOC_KEY)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"amount": "lots"}, id="amount-text"),
        pytest.param({"amount": "1e9"}, id="amount-exponent"),
        pytest.param({"amount": "-5.00"}, id="amount-negative"),
        pytest.param({"reference": ""}, id="no-reference"),
        pytest.param({"status": ""}, id="no-status"),
    ],
)
def test_a_signed_but_incomplete_update_is_400(changes: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        verify_status_update(status_update(DOC_KEY, **changes), DOC_KEY)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0771234567", "0771234567"),
        ("077 123 4567", "0771234567"),
        ("+263 77 123 4567", "0771234567"),
        ("+263-71-123-4567", "0711234567"),
        ("00263771234567", "0771234567"),
        ("263771234567", "0771234567"),
    ],
)
def test_phone_numbers_are_normalised(raw: str, expected: str) -> None:
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize("raw", ["", "12345", "0871234567", "07712345678", "077123456a", "+1 555"])
def test_bad_phone_numbers_are_400(raw: str) -> None:
    with pytest.raises(InvalidInput) as info:
        normalise_phone(raw)
    assert info.value.field == "phone"


def report_of(status: str) -> StatusReport:
    amount = Decimal("29.99") if status == "Paid" else None
    return StatusReport("INV-000001-P1", "9510", amount, status, "")


@pytest.mark.parametrize(
    ("status", "was_completed", "expected"),
    [
        pytest.param("Sent", False, "Sent", id="pending-follows-paynow"),
        pytest.param("Cancelled", False, "Cancelled", id="cancelled"),
        pytest.param("Paid", False, "Paid", id="paid"),
        pytest.param("Paid", True, "Paid", id="paid-again"),
        pytest.param("Created", True, "Paid", id="late-created-keeps-paid"),
        pytest.param("Cancelled", True, "Paid", id="late-cancelled-keeps-paid"),
        pytest.param("Disputed", True, "Disputed", id="disputed-after-paid"),
        pytest.param("Refunded", True, "Refunded", id="refunded-after-paid"),
    ],
)
def test_the_transaction_status_after_an_update(
    status: str, was_completed: bool, expected: str
) -> None:
    assert transaction_status(report_of(status), "Paid", was_completed=was_completed) == expected


def test_a_paynow_reference_must_match_the_recorded_one() -> None:
    check_paynow_reference("9510", "9510")
    check_paynow_reference("9510", None)  # the first update to name it
    check_paynow_reference("", "9510")  # an update without one
    with pytest.raises(Conflict) as info:
        check_paynow_reference("9511", "9510")
    assert info.value.code == "paynow_reference_mismatch"


def test_only_mobile_money_methods_are_express_methods() -> None:
    check_mobile_method("")  # a web payment
    check_mobile_method("ecocash")
    check_mobile_method("onemoney")
    with pytest.raises(InvalidInput) as info:
        check_mobile_method("visa")
    assert info.value.field == "method"


# --- the client against the simulator --------------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[PaynowSimulator]:
    sim = PaynowSimulator().start()
    try:
        yield sim
    finally:
        sim.stop()


def settings_for(simulator: PaynowSimulator | None, **changes: object) -> PaynowSettings:
    settings = PaynowSettings(
        integration_id=simulator.integration_id if simulator else "1201",
        integration_key=simulator.integration_key if simulator else DOC_KEY,
        return_url="http://localhost:3000/dashboard/invoices?paid=1",
        result_url="http://127.0.0.1:9/api/billing/paynow/result/",
        api_url=simulator.url if simulator else "https://www.paynow.co.zw",
        timeout=5.0,
        auth_email=None,
    )
    return replace(settings, **changes)  # type: ignore[arg-type]


Connect = Callable[[PaynowSettings], PaynowClient]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """A PaynowClient over an HTTP client made as the app makes it, closed after the test."""
    made: list[httpx.AsyncClient] = []

    def client_for(settings: PaynowSettings) -> PaynowClient:
        http = new_http_client(settings)
        made.append(http)
        return PaynowClient(settings, http)

    yield client_for
    for http in made:
        await http.aclose()


WEB = PaymentRequest(
    reference="INV-000007-P3",
    amount=Decimal("29.99"),
    additional_info="Slyker Tech invoice INV-000007",
    auth_email="tariro@example.com",
)
EXPRESS = replace(WEB, phone="0771111111", method="ecocash")


async def test_a_missing_setting_is_named(connect: Connect) -> None:
    for name in ("integration_id", "integration_key", "return_url", "result_url"):
        settings = replace(settings_for(None), **{name: None})  # type: ignore[arg-type]
        with pytest.raises(PaynowNotConfigured) as info:
            connect(settings)
        assert info.value.setting == f"PAYNOW_{name.upper()}"
        assert info.value.setting in info.value.message


async def test_web_initiation(simulator: PaynowSimulator, connect: Connect) -> None:
    reply = await connect(settings_for(simulator)).initiate(WEB)
    sim = simulator.transaction(WEB.reference)
    assert reply.browser_url == f"{simulator.url}/Payment/ConfirmPayment/{sim.paynow_reference}"
    assert reply.poll_url.startswith(f"{simulator.url}/interface/checkpayment/?guid=")
    assert reply.paynow_reference == sim.paynow_reference
    assert sim.fields == {
        "id": simulator.integration_id,
        "reference": "INV-000007-P3",
        "amount": "29.99",
        "additionalinfo": "Slyker Tech invoice INV-000007",
        "returnurl": "http://localhost:3000/dashboard/invoices?paid=1",
        "resulturl": "http://127.0.0.1:9/api/billing/paynow/result/",
        "authemail": "tariro@example.com",
        "status": "Message",
    }
    assert not sim.express and simulator.rejected == []


async def test_express_initiation(simulator: PaynowSimulator, connect: Connect) -> None:
    reply = await connect(settings_for(simulator)).initiate(EXPRESS)
    sim = simulator.transaction(EXPRESS.reference)
    assert sim.express and sim.fields["phone"] == "0771111111"
    assert sim.fields["method"] == "ecocash"
    assert reply.instructions.startswith("Dial") and reply.browser_url == ""
    assert reply.poll_url.startswith(simulator.url)


async def test_paynow_refuses_a_wrong_key(simulator: PaynowSimulator, connect: Connect) -> None:
    client = connect(settings_for(simulator, integration_key="0" * 8 + "-0000"))
    with pytest.raises(PaynowDeclined) as info:
        await client.initiate(WEB)
    assert "Invalid Hash" in info.value.message
    assert simulator.transactions == {} and simulator.rejected[0].startswith("Invalid Hash")


async def test_paynow_refuses_a_wrong_integration_id(
    simulator: PaynowSimulator, connect: Connect
) -> None:
    with pytest.raises(PaynowDeclined) as info:
        await connect(settings_for(simulator, integration_id="1")).initiate(WEB)
    assert info.value.message == "Paynow refused the payment: Invalid Id."


async def test_insufficient_balance_is_declined(
    simulator: PaynowSimulator, connect: Connect
) -> None:
    request = replace(EXPRESS, phone=INSUFFICIENT_BALANCE_PHONE)
    with pytest.raises(PaynowDeclined) as info:
        await connect(settings_for(simulator)).initiate(request)
    assert info.value.message == "Paynow refused the payment: Insufficient balance"
    assert info.value.code == "paynow_declined"


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("http500", "Paynow answered HTTP 500; try again later."),
        ("garbage", "Paynow sent a reply we could not read."),
        ("bad_hash", "Paynow's reply failed hash verification: refused."),
    ],
)
async def test_bad_replies_are_upstream_errors(
    simulator: PaynowSimulator, fault: str, message: str, connect: Connect
) -> None:
    simulator.fault = fault
    with pytest.raises(UpstreamError) as info:
        await connect(settings_for(simulator)).initiate(WEB)
    assert info.value.message == message
    assert not isinstance(info.value, PaynowDeclined)


async def test_a_slow_paynow_times_out(simulator: PaynowSimulator, connect: Connect) -> None:
    simulator.fault, simulator.slow_seconds = "slow", 2.5
    with pytest.raises(UpstreamError) as info:
        await connect(settings_for(simulator, timeout=0.2)).initiate(WEB)
    assert info.value.message == "Paynow did not answer in time; try again."


async def test_an_unreachable_paynow_is_an_upstream_error(connect: Connect) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # nothing listens once it is closed
    settings = settings_for(None, api_url=f"http://127.0.0.1:{closed}")
    with pytest.raises(UpstreamError) as info:
        await connect(settings).initiate(WEB)
    assert info.value.message == "Paynow could not be reached; try again later."


async def test_poll(simulator: PaynowSimulator, connect: Connect) -> None:
    client = connect(settings_for(simulator))
    reply = await client.initiate(WEB)
    created = await client.poll(reply.poll_url)
    assert created.status == "Created" and not created.is_paid
    simulator.set_status(WEB.reference, "Paid")
    paid = await client.poll(reply.poll_url)
    assert paid.is_paid and paid.amount == Decimal("29.99")
    assert paid.reference == WEB.reference and paid.paynow_reference == reply.paynow_reference
    simulator.fault = "bad_hash"
    with pytest.raises(UpstreamError):
        await client.poll(reply.poll_url)


async def test_only_paynows_own_urls_are_polled(
    simulator: PaynowSimulator, connect: Connect
) -> None:
    client = connect(settings_for(simulator))
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        simulator.url.replace("127.0.0.1", "localhost") + "/interface/checkpayment/?guid=x",
        "",
        "https://www.paynow.co.zw/interface/checkpayment/?guid=x",
    ):
        with pytest.raises(UpstreamError):
            await client.poll(url)
    assert simulator.polls == 0


async def test_calls_share_one_connection(simulator: PaynowSimulator, connect: Connect) -> None:
    """Two initiations and a poll through one PaynowClient's HTTP client: one TCP connection
    at the simulator (HTTP/1.1 keep-alive), not one per call."""
    client = connect(settings_for(simulator))
    reply = await client.initiate(WEB)
    await client.initiate(replace(WEB, reference="INV-000007-P4"))
    await client.poll(reply.poll_url)
    assert len(simulator.transactions) == 2 and simulator.polls == 1
    assert simulator.connections == 1
