//! Property tests of pairing tickets and the pairing handshake through the
//! public API.

use hearth_crypto::identity::{DeviceId, DeviceKey};
use hearth_crypto::membership::AccountId;
use hearth_crypto::pairing::{
    CheckCode, Inviter, InviterEvent, Joiner, JoinerEvent, Message, Refusal,
};
use hearth_crypto::ticket::{Invitation, MAX_ADDRS};
use proptest::prelude::*;
use proptest::sample::Index;
use rand::SeedableRng;
use rand::rngs::StdRng;

const NOW: u64 = 1_700_000_000_000;
const EXPIRY: u64 = NOW + 120_000;

fn id(n: u8) -> DeviceId {
    DeviceKey::from_bytes(&[n; 32]).id()
}

fn invitation_with(secret: [u8; 16]) -> Invitation {
    Invitation::new(
        AccountId::from_bytes(&[1; 32]),
        id(1),
        vec![],
        secret,
        EXPIRY,
    )
    .expect("no addresses is within bounds")
}

fn arb_invitation() -> impl Strategy<Value = Invitation> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        // 32 characters are at most 128 bytes, the address bound.
        proptest::collection::vec("\\PC{0,32}", 0..=MAX_ADDRS),
        any::<[u8; 16]>(),
        any::<u64>(),
    )
        .prop_map(|(account, seed, addrs, secret, expiry)| {
            let inviter = DeviceKey::from_bytes(&seed).id();
            Invitation::new(
                AccountId::from_bytes(&account),
                inviter,
                addrs,
                secret,
                expiry,
            )
            .expect("the strategy stays within the address bounds")
        })
}

fn arb_refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        Just(Refusal::Expired),
        Just(Refusal::AlreadyUsed),
        Just(Refusal::Busy),
        Just(Refusal::WrongProof),
        Just(Refusal::WrongCode),
        Just(Refusal::PeerMismatch),
        Just(Refusal::Protocol),
    ]
}

/// Messages from a small set of devices (1 is the inviter), with arbitrary
/// nonces and proofs: what a peer without the secret can send.
fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (1u8..=4, any::<[u8; 32]>()).prop_map(|(n, nonce)| Message::Hello {
            joiner: id(n),
            nonce
        }),
        (any::<[u8; 32]>(), any::<[u8; 32]>())
            .prop_map(|(nonce, proof)| Message::Challenge { nonce, proof }),
        any::<[u8; 32]>().prop_map(|proof| Message::Proof { proof }),
        proptest::collection::vec(any::<u8>(), 0..16)
            .prop_map(|payload| Message::Welcome { payload }),
        arb_refusal().prop_map(|reason| Message::Refused { reason }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    ToInviter { peer: u8, message: Message, at: u64 },
    ToJoiner { peer: u8, message: Message },
    Confirm { code: String, at: u64 },
    Welcome,
}

fn arb_op() -> impl Strategy<Value = Op> {
    let at = NOW..EXPIRY + 1_000;
    prop_oneof![
        (1u8..=4, arb_message(), at.clone()).prop_map(|(peer, message, at)| Op::ToInviter {
            peer,
            message,
            at
        }),
        (1u8..=4, arb_message()).prop_map(|(peer, message)| Op::ToJoiner { peer, message }),
        (prop_oneof!["[0-9]{6}", "\\PC{0,10}"], at).prop_map(|(code, at)| Op::Confirm { code, at }),
        Just(Op::Welcome),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tickets_round_trip(inv in arb_invitation()) {
        let text = inv.encode();
        prop_assert!(text.starts_with("hearth1"));
        prop_assert_eq!(&Invitation::decode(&text).unwrap(), &inv);
        prop_assert_eq!(&Invitation::decode(&inv.qr_payload()).unwrap(), &inv);
    }

    #[test]
    fn a_changed_character_never_decodes_to_another_invitation(
        inv in arb_invitation(),
        at in any::<Index>(),
        replacement in prop::sample::select(
            "abcdefghijklmnopqrstuvwxyz234567ABCDEFGHIJKLMNOPQRSTUVWXYZ0189 -é".chars().collect::<Vec<_>>()
        ),
    ) {
        let text = inv.encode();
        let i = at.index(text.len());
        let original = char::from(text.as_bytes()[i]);
        prop_assume!(original != replacement);
        let mut changed = text[..i].to_owned();
        changed.push(replacement);
        changed.push_str(&text[i + 1..]);
        let decoded = Invitation::decode(&changed);
        if original.eq_ignore_ascii_case(&replacement) {
            // A case change is the same ticket.
            prop_assert_eq!(&decoded.unwrap(), &inv);
        } else {
            prop_assert!(decoded.is_err(), "{} decoded after changing index {}", changed, i);
        }
    }

    #[test]
    fn decoding_arbitrary_text_never_panics(
        text in prop_oneof!["\\PC{0,200}", "hearth1[a-z2-7]{0,200}", "HEARTH1[A-Z2-7 ]{0,200}"],
    ) {
        let _ = Invitation::decode(&text);
    }

    #[test]
    fn decoding_arbitrary_messages_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        if let Ok(message) = Message::decode(&bytes) {
            prop_assert_eq!(Message::decode(&message.encode()).unwrap(), message);
        }
    }

    #[test]
    fn without_the_secret_nothing_is_confirmed_or_welcomed(
        ops in proptest::collection::vec(arb_op(), 0..40),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut inviter = Inviter::new(invitation_with([9; 16]));
        let (mut joiner, _) = Joiner::start(invitation_with([9; 16]), id(2), NOW, &mut rng).unwrap();
        for op in ops {
            match op {
                Op::ToInviter { peer, message, at } => {
                    match inviter.handle(id(peer), message, at, &mut rng) {
                        // Answering a hello is fine; it proves nothing.
                        Ok(InviterEvent::Send(Message::Challenge { .. })) | Err(_) => {}
                        Ok(other) => prop_assert!(false, "inviter reached {:?}", other),
                    }
                }
                Op::ToJoiner { peer, message } => {
                    let event = joiner.handle(id(peer), message);
                    prop_assert!(event.is_err(), "joiner reached {:?}", event);
                }
                Op::Confirm { code, at } => {
                    prop_assert!(inviter.confirm(&code, at).is_err());
                }
                Op::Welcome => prop_assert!(inviter.welcome(vec![1]).is_err()),
            }
        }
    }

    #[test]
    fn confirmation_needs_the_right_secret_and_the_right_code(
        inviter_secret in any::<[u8; 16]>(),
        joiner_secret in prop_oneof![Just(None), any::<[u8; 16]>().prop_map(Some)],
        typed in prop_oneof![Just(None), (0u32..1_000_000).prop_map(Some)],
        seed in any::<u64>(),
    ) {
        let joiner_secret = joiner_secret.unwrap_or(inviter_secret);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut inviter = Inviter::new(invitation_with(inviter_secret));
        let (mut joiner, hello) =
            Joiner::start(invitation_with(joiner_secret), id(2), NOW, &mut rng).unwrap();
        let InviterEvent::Send(challenge) = inviter.handle(id(2), hello, NOW, &mut rng).unwrap()
        else {
            return Err(TestCaseError::fail("no challenge"));
        };
        let shown = match joiner.handle(id(1), challenge) {
            Ok(JoinerEvent::ShowCode { reply, code }) => {
                let event = inviter.handle(id(2), reply, NOW, &mut rng).unwrap();
                prop_assert_eq!(event, InviterEvent::AwaitingConfirmation { joiner: id(2), code });
                code
            }
            Ok(other) => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
            Err(_) => {
                prop_assert_ne!(joiner_secret, inviter_secret);
                // The attempt went nowhere: no code to confirm.
                prop_assert!(inviter.confirm("000000", NOW).is_err());
                return Ok(());
            }
        };
        prop_assert_eq!(joiner_secret, inviter_secret);
        let typed = typed.map_or(shown.to_string(), |n| format!("{n:06}"));
        let right = CheckCode::parse(&typed).unwrap() == shown;
        prop_assert_eq!(inviter.confirm(&typed, NOW + 1).is_ok(), right);
        prop_assert_eq!(inviter.welcome(vec![]).is_ok(), right);
    }
}
