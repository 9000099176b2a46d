//! The TPM itself, through tss-esapi: the endorsement key and its certificate, the
//! attestation key (created under the EK, persisted), quotes, the application PCR and
//! the NV counter that anchors the ledger.
//!
//! Every operation opens its own connection ([`Tpm::session`]) and closes it: a TPM
//! (or swtpm) that restarts mid-run costs one failed operation, never a stuck handle,
//! and the NV certification, which tss-esapi 7.7 does not wrap, can use the TPM
//! through its own connection in between ([`super::nv_certify`]).

use std::str::FromStr;

use tss_esapi::abstraction::ak::{create_ak_2, load_ak};
use tss_esapi::abstraction::ek::{create_ek_object_2, retrieve_ek_pubcert};
use tss_esapi::abstraction::{pcr, AsymmetricAlgorithmSelection};
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::constants::NvIndexType;
use tss_esapi::handles::{KeyHandle, NvIndexHandle, NvIndexTpmHandle, PcrHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::structures::{Data, Digest, DigestValues, NvPublicBuilder, PcrSelectionListBuilder, PcrSlot, SignatureScheme};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::Context;

use super::{Identity, Quote, Signed};

/// Where the attestation key is persisted (the TCG's range for endorsement-hierarchy
/// keys starts at 0x81010000; 0x81010001 is commonly the EK).
pub const AK_HANDLE: u32 = 0x8101_4C55;
/// The NV counter that anchors the ledger (owner range).
pub const ANCHOR_NV_INDEX: u32 = 0x0100_4C55;

/// Why a TPM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// The TCTI string is not one tss-esapi understands.
    #[error("TCTI {tcti}: {source}")]
    Tcti {
        /// The configured TCTI.
        tcti: String,
        /// Why.
        source: tss_esapi::Error,
    },
    /// The TPM refused or failed a command.
    #[error("TPM {what}: {source}")]
    Command {
        /// What was asked.
        what: &'static str,
        /// The TSS error.
        source: tss_esapi::Error,
    },
    /// The TPM answered something Lucid does not accept.
    #[error("TPM {0}")]
    Unexpected(String),
}

/// The empty password authorisation. The objects Lucid uses (AK, anchor counter, PCRs,
/// owner and endorsement hierarchies) have empty auth values, for which an HMAC session
/// proves nothing more; tss-esapi's null-auth session would start one per command, at
/// a cost of several milliseconds of the host's CPU each (OpenSSL fetches).
const PASSWORD: Option<tss_esapi::interface_types::session_handles::AuthSession> = Some(tss_esapi::interface_types::session_handles::AuthSession::Password);

fn cmd(what: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Command { what, source }
}

/// A TPM reachable through a TCTI.
#[derive(Clone, Debug)]
pub struct Tpm {
    tcti: String,
    /// The TCTI parsed once (tss-esapi compiles regexes for each parse).
    conf: Result<TctiNameConf, String>,
}

impl Tpm {
    /// A TPM at `tcti` (`device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, ...).
    pub fn new(tcti: &str) -> Tpm {
        Tpm { tcti: tcti.to_string(), conf: TctiNameConf::from_str(tcti).map_err(|e| e.to_string()) }
    }

    /// The configured TCTI.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// Opens a connection for one operation.
    pub fn session(&self) -> Result<Context, TpmError> {
        let conf = match &self.conf {
            Ok(c) => c.clone(),
            Err(e) => return Err(TpmError::Unexpected(format!("TCTI {:?}: {e}", self.tcti))),
        };
        Context::new(conf).map_err(|source| TpmError::Tcti { tcti: self.tcti.clone(), source })
    }

    /// Creates the EK (from the default RSA-2048 template, as manufacturers certify it),
    /// and the AK under it if none is persisted; returns both identities.
    pub fn provision(&self) -> Result<Identity, TpmError> {
        let mut ctx = self.session()?;
        let ek = create_ek_object_2(&mut ctx, AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048), None).map_err(cmd("create EK"))?;
        let (ek_public, ek_name, _) = ctx.read_public(ek).map_err(cmd("read EK"))?;
        let ek_certificate = retrieve_ek_pubcert(&mut ctx, AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048)).ok().filter(|c| !c.is_empty());
        let ak = match persisted_ak(&mut ctx)? {
            Some(ak) => ak,
            None => {
                let created = create_ak_2(
                    &mut ctx,
                    ek,
                    HashingAlgorithm::Sha256,
                    AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
                    SignatureSchemeAlgorithm::EcDsa,
                    None,
                    None,
                )
                .map_err(cmd("create AK"))?;
                let loaded = load_ak(&mut ctx, ek, None, created.out_private, created.out_public).map_err(cmd("load AK"))?;
                let handle = PersistentTpmHandle::new(AK_HANDLE).map_err(cmd("AK handle"))?;
                let persisted = ctx
                    .execute_with_session(PASSWORD, |c| c.evict_control(Provision::Owner, loaded.into(), Persistent::Persistent(handle)))
                    .map_err(cmd("persist AK"))?;
                let _ = ctx.flush_context(loaded.into());
                KeyHandle::from(persisted)
            }
        };
        let (ak_public, ak_name, _) = ctx.read_public(ak).map_err(cmd("read AK"))?;
        let _ = ctx.flush_context(ek.into());
        Ok(Identity {
            ek_name: lucid_common::hex::encode(ek_name.value()),
            ek_public: ek_public.marshall().map_err(cmd("marshal EK"))?,
            ek_certificate,
            ak_name: lucid_common::hex::encode(ak_name.value()),
            ak_public: ak_public.marshall().map_err(cmd("marshal AK"))?,
        })
    }

    /// Quotes `pcrs` (SHA-256 bank) with the AK over `qualifying` data, and reads the
    /// values the quote covers.
    pub fn quote(&self, pcrs: &[u32], qualifying: &[u8]) -> Result<Quote, TpmError> {
        let mut ctx = self.session()?;
        let ak = persisted_ak(&mut ctx)?.ok_or_else(|| TpmError::Unexpected("has no attestation key (not provisioned)".into()))?;
        let slots = pcrs.iter().map(|p| slot(*p)).collect::<Result<Vec<_>, _>>()?;
        let selection = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots)
            .build()
            .map_err(cmd("PCR selection"))?;
        let data = Data::try_from(qualifying.to_vec()).map_err(cmd("qualifying data"))?;
        // The values are read before and after the quote; a PCR extended in between
        // would make them differ from the quote, so retry once.
        for _ in 0..2 {
            let values = read_pcrs(&mut ctx, pcrs)?;
            let (attest, signature) = ctx
                .execute_with_session(PASSWORD, |c| c.quote(ak, data.clone(), SignatureScheme::Null, selection.clone()))
                .map_err(cmd("quote"))?;
            let after = read_pcrs(&mut ctx, pcrs)?;
            if values == after {
                return Ok(Quote {
                    signed: Signed {
                        attest: attest.marshall().map_err(cmd("marshal quote"))?,
                        signature: signature.marshall().map_err(cmd("marshal signature"))?,
                    },
                    pcrs: values,
                });
            }
        }
        Err(TpmError::Unexpected("PCRs kept changing while being quoted".into()))
    }

    /// TPM2_ActivateCredential: recovers a verifier's secret encrypted to the EK and bound
    /// to the AK's name; only this TPM, holding both, can.
    pub fn activate(&self, blob: &[u8], secret: &[u8]) -> Result<Vec<u8>, TpmError> {
        use tss_esapi::constants::SessionType;
        use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
        use tss_esapi::structures::{EncryptedSecret, IdObject, SymmetricDefinition};
        let mut ctx = self.session()?;
        let ak = persisted_ak(&mut ctx)?.ok_or_else(|| TpmError::Unexpected("has no attestation key (not provisioned)".into()))?;
        let ek = create_ek_object_2(&mut ctx, AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048), None).map_err(cmd("create EK"))?;
        let session = ctx
            .start_auth_session(None, None, None, SessionType::Policy, SymmetricDefinition::AES_128_CFB, HashingAlgorithm::Sha256)
            .map_err(cmd("start a policy session"))?
            .ok_or_else(|| TpmError::Unexpected("returned no policy session".into()))?;
        let policy = PolicySession::try_from(session).map_err(cmd("policy session"))?;
        ctx.execute_with_session(PASSWORD, |c| {
            c.policy_secret(policy, tss_esapi::handles::AuthHandle::Endorsement, Default::default(), Default::default(), Default::default(), None)
        })
        .map_err(cmd("policy secret (endorsement)"))?;
        let blob = IdObject::try_from(blob.to_vec()).map_err(cmd("credential blob"))?;
        let secret = EncryptedSecret::try_from(secret.to_vec()).map_err(cmd("encrypted secret"))?;
        let out = ctx
            .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |c| c.activate_credential(ak, ek, blob, secret))
            .map_err(cmd("activate credential"));
        let _ = ctx.flush_context(ek.into());
        let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(session).into());
        Ok(out?.value().to_vec())
    }

    /// Reads SHA-256 PCR values.
    pub fn read_pcrs(&self, pcrs: &[u32]) -> Result<Vec<(u32, [u8; 32])>, TpmError> {
        read_pcrs(&mut self.session()?, pcrs)
    }

    /// Extends the SHA-256 bank of `pcr` with `digest`; returns the values before and
    /// after (so the ledger shows what the extension started from).
    pub fn extend(&self, pcr: u32, digest: [u8; 32]) -> Result<([u8; 32], [u8; 32]), TpmError> {
        let mut ctx = self.session()?;
        let before = read_pcrs(&mut ctx, &[pcr])?
            .first()
            .map(|(_, v)| *v)
            .ok_or_else(|| TpmError::Unexpected(format!("did not return PCR {pcr}")))?;
        let handle = PcrHandle::try_from(tss_esapi::tss2_esys::TPM2_HANDLE::from(pcr)).map_err(cmd("PCR handle"))?;
        let mut values = DigestValues::new();
        values.set(HashingAlgorithm::Sha256, Digest::try_from(digest.to_vec()).map_err(cmd("digest"))?);
        ctx.execute_with_session(PASSWORD, |c| c.pcr_extend(handle, values)).map_err(cmd("PCR extend"))?;
        let after = read_pcrs(&mut ctx, &[pcr])?
            .first()
            .map(|(_, v)| *v)
            .ok_or_else(|| TpmError::Unexpected(format!("did not return PCR {pcr}")))?;
        Ok((before, after))
    }

    /// Has the AK certify the anchor counter's value over `qualifying` (TPM2_NV_Certify).
    pub fn certify_counter(&self, qualifying: &[u8]) -> Result<Signed, TpmError> {
        super::nv_certify::certify_counter(&self.tcti, qualifying)
    }

    /// The anchor counter's value, `None` when it was never defined.
    pub fn counter(&self) -> Result<Option<u64>, TpmError> {
        let mut ctx = self.session()?;
        let Some(handle) = counter_handle(&mut ctx)? else { return Ok(None) };
        read_counter(&mut ctx, handle).map(Some)
    }

    /// Advances the anchor counter (defining it on first use); returns the new value.
    /// The TPM never lets a counter go back, not even one deleted and defined again (a
    /// new counter starts at the highest value any counter had), so the value bounds
    /// how far back the ledger can be rolled.
    pub fn advance_counter(&self) -> Result<u64, TpmError> {
        let mut ctx = self.session()?;
        let handle = match counter_handle(&mut ctx)? {
            Some(h) => h,
            None => {
                let attributes = NvIndexAttributesBuilder::new()
                    .with_nv_index_type(NvIndexType::Counter)
                    .with_auth_write(true)
                    .with_auth_read(true)
                    .with_no_da(true)
                    .build()
                    .map_err(cmd("NV attributes"))?;
                let public = NvPublicBuilder::new()
                    .with_nv_index(nv_index()?)
                    .with_index_name_algorithm(HashingAlgorithm::Sha256)
                    .with_index_attributes(attributes)
                    .with_data_area_size(8)
                    .build()
                    .map_err(cmd("NV public"))?;
                ctx.execute_with_session(PASSWORD, |c| c.nv_define_space(Provision::Owner, None, public)).map_err(cmd("define the anchor counter"))?
            }
        };
        ctx.execute_with_session(PASSWORD, |c| c.nv_increment(NvAuth::NvIndex(handle), handle)).map_err(cmd("advance the anchor counter"))?;
        read_counter(&mut ctx, handle)
    }
}

fn nv_index() -> Result<NvIndexTpmHandle, TpmError> {
    NvIndexTpmHandle::new(ANCHOR_NV_INDEX).map_err(cmd("NV index"))
}

fn counter_handle(ctx: &mut Context) -> Result<Option<NvIndexHandle>, TpmError> {
    let index = nv_index()?;
    match ctx.execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(index))) {
        Ok(h) => Ok(Some(NvIndexHandle::from(h))),
        Err(e) if is_handle_missing(&e) => Ok(None),
        Err(source) => Err(TpmError::Command { what: "open the anchor counter", source }),
    }
}

fn read_counter(ctx: &mut Context, handle: NvIndexHandle) -> Result<u64, TpmError> {
    let bytes = ctx.execute_with_session(PASSWORD, |c| c.nv_read(NvAuth::NvIndex(handle), handle, 8, 0)).map_err(cmd("read the anchor counter"))?;
    let raw: [u8; 8] = bytes.value().try_into().map_err(|_| TpmError::Unexpected("anchor counter is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(raw))
}

fn persisted_ak(ctx: &mut Context) -> Result<Option<KeyHandle>, TpmError> {
    let handle = PersistentTpmHandle::new(AK_HANDLE).map_err(cmd("AK handle"))?;
    match ctx.execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(handle))) {
        Ok(h) => Ok(Some(KeyHandle::from(h))),
        Err(e) if is_handle_missing(&e) => Ok(None),
        Err(source) => Err(TpmError::Command { what: "open the attestation key", source }),
    }
}

/// TPM_RC_HANDLE (0x8B) in any position: the persistent object or NV index is absent.
fn is_handle_missing(e: &tss_esapi::Error) -> bool {
    match e {
        tss_esapi::Error::Tss2Error(rc) => rc.kind() == Some(tss_esapi::constants::response_code::Tss2ResponseCodeKind::Handle),
        _ => false,
    }
}

fn slot(pcr: u32) -> Result<PcrSlot, TpmError> {
    if pcr > 23 {
        return Err(TpmError::Unexpected(format!("PCR {pcr} is out of range (0-23)")));
    }
    PcrSlot::try_from(1u32 << pcr).map_err(cmd("PCR slot"))
}

fn read_pcrs(ctx: &mut Context, pcrs: &[u32]) -> Result<Vec<(u32, [u8; 32])>, TpmError> {
    let slots = pcrs.iter().map(|p| slot(*p)).collect::<Result<Vec<_>, _>>()?;
    let selection = PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(cmd("PCR selection"))?;
    let data = pcr::read_all(ctx, selection).map_err(cmd("PCR read"))?;
    let bank = data.pcr_bank(HashingAlgorithm::Sha256).ok_or_else(|| TpmError::Unexpected("has no SHA-256 PCR bank".into()))?;
    let mut sorted: Vec<u32> = pcrs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
        .into_iter()
        .map(|p| {
            let d = bank.get_digest(slot(p)?).ok_or_else(|| TpmError::Unexpected(format!("did not return PCR {p}")))?;
            let v: [u8; 32] = d.value().try_into().map_err(|_| TpmError::Unexpected(format!("PCR {p} is not 32 bytes")))?;
            Ok((p, v))
        })
        .collect()
}
