//! Accounts (RFC 8555 §7.3): new accounts (with external account
//! binding, or without where `accounts_without_eab` allows), reading and
//! updating them, deactivation and key change.

use serde::Deserialize;
use serde_json::Value;

use super::eab;
use super::jws::{Jwk, Jws, KeyRef};
use super::problem::{Problem, ProblemType};
use super::records::{self, AccountRecord, AccountStatus, EabRecord, Stored};
use super::server::{
    AcmeServer, Answer, KeyMode, MAX_CONTACT_LEN, MAX_CONTACTS, SWAP_ATTEMPTS, Signed, random_id,
};
use super::views::account_json;
use crate::model::AuditEvent;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewAccount {
    contact: Option<Vec<String>>,
    #[serde(default)]
    only_return_existing: bool,
    external_account_binding: Option<Value>,
}

#[derive(Deserialize)]
struct AccountUpdate {
    contact: Option<Vec<String>>,
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyChange {
    account: String,
    old_key: Value,
}

impl AcmeServer {
    /// `POST /acme/new-account`
    pub async fn new_account(&self, request: Signed) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let peer = request.peer.clone();
        let peer_ip = request.peer_ip;
        let verified = self.verify(request, KeyMode::Jwk).await?;
        let payload: NewAccount = verified.jws.json()?;
        let store = self.authority.store();
        let thumbprint = verified.key.thumbprint();
        if let Some(existing) = self.account_with_key(&thumbprint).await? {
            return existing_account(&base, existing);
        }
        if payload.only_return_existing {
            return Err(Problem::new(
                ProblemType::AccountDoesNotExist,
                "no account has this key",
            ));
        }
        let contact = checked_contacts(payload.contact.unwrap_or_default())?;
        let now = self.authority.now();
        let state = self.authority.acme_state();
        // Before an EAB key is spent on it.
        state.limits.new_account(peer_ip)?;
        let eab_key = match &payload.external_account_binding {
            Some(binding) => {
                let key_id = state.eab.check_binding(
                    binding,
                    &format!("{base}/new-account"),
                    &verified.key,
                )?;
                Some(self.usable_eab_key(&key_id, now).await?)
            }
            None if state.settings.accounts_without_eab => None,
            None => {
                return Err(Problem::new(
                    ProblemType::ExternalAccountRequired,
                    "this certd requires external account binding: ask its operator for a key (`certd acme eab create --entry <entry>`)",
                ));
            }
        };
        let entry = eab_key.as_ref().map(|stored| stored.value.entry.clone());
        let account = AccountRecord {
            id: random_id(),
            key: verified.key.clone(),
            contact,
            status: AccountStatus::Valid,
            entry: entry.clone(),
            eab_key_id: eab_key.as_ref().map(|stored| stored.value.key_id.clone()),
            created_at: now,
        };
        // The account first, the key's index second, the EAB key spent
        // last: a write failing half-way then leaves no key blocked by an
        // index without its account and no EAB key spent on no account.
        let account_key = records::account_key(&account.id);
        if !records::create(store, &account_key, &account, None).await? {
            return Err(Problem::internal(&"a new account id was taken"));
        }
        let indexed = self.index_account_key(&thumbprint, &account.id).await;
        if !matches!(indexed, Ok(None)) {
            self.forget_account(&thumbprint, &account, false).await;
        }
        // Of two requests with one key, one account: the other answers
        // with it.
        if let Some(existing) = indexed? {
            return existing_account(&base, existing);
        }
        if let Some(eab_key) = &eab_key
            && let Err(problem) = self.spend_eab_key(eab_key).await
        {
            self.forget_account(&thumbprint, &account, true).await;
            return Err(problem);
        }
        self.authority
            .audit_acme(
                AuditEvent::CreateAcmeAccount,
                &Self::caller(&account.id, &peer),
                format!(
                    "account {}{}",
                    account.id,
                    entry
                        .as_deref()
                        .map(|entry| format!(" bound to entry {entry}"))
                        .unwrap_or_else(|| " without external account binding".into())
                ),
                None,
            )
            .await;
        Ok(Answer::json(201, account_json(&base, &account))
            .at(format!("{base}/account/{}", account.id)))
    }

    async fn account_with_key(&self, thumbprint: &str) -> Result<Option<AccountRecord>, Problem> {
        let store = self.authority.store();
        let Some(id) = records::load::<String>(store, &records::account_by_key(thumbprint)).await?
        else {
            return Ok(None);
        };
        Ok(
            records::load::<AccountRecord>(store, &records::account_key(&id.value))
                .await?
                .map(|stored| stored.value),
        )
    }

    /// Indexes account key `thumbprint` to account `id`: `None` once it
    /// is, or the account that holds the key already. An index left
    /// without its account (a write that failed half-way) counts as absent
    /// and is taken over.
    async fn index_account_key(
        &self,
        thumbprint: &str,
        id: &str,
    ) -> Result<Option<AccountRecord>, Problem> {
        let store = self.authority.store();
        let key = records::account_by_key(thumbprint);
        for _ in 0..SWAP_ATTEMPTS {
            if records::create(store, &key, &id.to_owned(), None).await? {
                return Ok(None);
            }
            let Some(index) = records::load::<String>(store, &key).await? else {
                continue;
            };
            match records::load::<AccountRecord>(store, &records::account_key(&index.value)).await?
            {
                Some(existing) => return Ok(Some(existing.value)),
                None => {
                    if records::replace(store, &key, &index, &id.to_owned(), None).await? {
                        return Ok(None);
                    }
                }
            }
        }
        Err(Problem::internal(&"the account key's index kept changing"))
    }

    /// Undoes a new account whose making failed: its key's index (if
    /// `indexed`, and still its own), then the record. Best effort: what
    /// is left behind is an index without its account, which counts as
    /// absent, or an account no key finds.
    async fn forget_account(&self, thumbprint: &str, account: &AccountRecord, indexed: bool) {
        let store = self.authority.store();
        let undo = async {
            if indexed {
                let key = records::account_by_key(thumbprint);
                if let Some(index) = records::load::<String>(store, &key).await?
                    && index.value == account.id
                {
                    records::remove(store, &key, &index).await?;
                }
            }
            let key = records::account_key(&account.id);
            if let Some(stored) = records::load::<AccountRecord>(store, &key).await? {
                records::remove(store, &key, &stored).await?;
            }
            Ok::<(), Problem>(())
        };
        if let Err(problem) = undo.await {
            tracing::warn!(%problem, account = account.id, "cannot undo a new ACME account");
        }
    }

    /// EAB key `key_id`, if it may bind an account now (unused, unexpired,
    /// for an entry ACME may issue for); not spent yet.
    async fn usable_eab_key(&self, key_id: &str, now: i64) -> Result<Stored<EabRecord>, Problem> {
        let store = self.authority.store();
        let key = records::eab_key(key_id);
        let stored = records::load::<EabRecord>(store, &key).await?;
        eab::usable(stored.as_ref().map(|stored| &stored.value), key_id, now)?;
        let Some(stored) = stored else {
            return Err(Problem::unauthorized(format!(
                "external account binding key {key_id} is unknown"
            )));
        };
        if self.authority.entry(&stored.value.entry).is_none() {
            return Err(Problem::unauthorized(format!(
                "external account binding key {key_id} is for entry {}, which no longer exists",
                stored.value.entry
            )));
        }
        // The entry may have become an agent's, or parented to one, since
        // the key was made.
        if let Err(error) = self.authority.acme_entry(&stored.value.entry, &[]) {
            return Err(Problem::unauthorized(format!(
                "external account binding key {key_id}: {error}"
            )));
        }
        Ok(stored)
    }

    /// Spends EAB key `stored` (once, even across replicas).
    async fn spend_eab_key(&self, stored: &Stored<EabRecord>) -> Result<(), Problem> {
        let store = self.authority.store();
        let key_id = &stored.value.key_id;
        let used = EabRecord {
            used: true,
            ..stored.value.clone()
        };
        if !records::replace(
            store,
            &records::eab_key(key_id),
            stored,
            &used,
            stored.expires_at(),
        )
        .await?
        {
            return Err(Problem::unauthorized(format!(
                "external account binding key {key_id} was already used"
            )));
        }
        Ok(())
    }

    /// `POST /acme/account/{account}`: read, update contacts, deactivate.
    pub async fn account(&self, request: Signed, account_id: &str) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let peer = request.peer.clone();
        let verified = self.verify(request, KeyMode::Kid).await?;
        Self::own(&verified, account_id, "account")?;
        if verified.jws.is_post_as_get() {
            let account = verified.account()?;
            return Ok(Answer::json(200, account_json(&base, account))
                .at(format!("{base}/account/{account_id}")));
        }
        let update: AccountUpdate = verified.jws.json()?;
        let deactivate = match update.status.as_deref() {
            // certbot sends the status it read back with every update.
            None | Some("valid") => false,
            Some("deactivated") => true,
            Some(other) => {
                return Err(Problem::malformed(format!(
                    "an account's status may only be set to \"deactivated\", not {other:?}"
                )));
            }
        };
        let contact = update.contact.map(checked_contacts).transpose()?;
        let store = self.authority.store();
        let key = records::account_key(account_id);
        for _ in 0..SWAP_ATTEMPTS {
            let current = records::load::<AccountRecord>(store, &key)
                .await?
                .ok_or_else(|| Problem::not_found("account"))?;
            let mut account = current.value.clone();
            if let Some(contact) = &contact {
                account.contact.clone_from(contact);
            }
            if deactivate {
                account.status = AccountStatus::Deactivated;
            }
            if records::replace(store, &key, &current, &account, None).await? {
                if deactivate {
                    self.authority
                        .audit_acme(
                            AuditEvent::DeactivateAcmeAccount,
                            &Self::caller(account_id, &peer),
                            format!("account {account_id} deactivated by its holder"),
                            None,
                        )
                        .await;
                }
                return Ok(Answer::json(200, account_json(&base, &account))
                    .at(format!("{base}/account/{account_id}")));
            }
        }
        Err(Problem::internal(&"the account kept changing"))
    }

    /// `POST /acme/key-change` (RFC 8555 §7.3.5).
    pub async fn key_change(&self, request: Signed) -> Result<Answer, Problem> {
        let base = request.base.clone();
        let url = request.url.clone();
        let verified = self.verify(request, KeyMode::Kid).await?;
        let account = verified.account()?.clone();
        let inner = Jws::parse(&verified.jws.payload)?;
        let KeyRef::Jwk(new_key) = inner.key_ref()? else {
            return Err(Problem::malformed(
                "the inner JWS must embed the new key (jwk)",
            ));
        };
        if inner.header.url.as_deref() != Some(url.as_str()) {
            return Err(Problem::malformed(
                "the inner JWS's url must be the outer one's",
            ));
        }
        if inner.header.nonce.is_some() {
            return Err(Problem::malformed("the inner JWS may not carry a nonce"));
        }
        inner.verify(&new_key)?;
        let change: KeyChange = inner.json()?;
        let account_url = format!("{base}/account/{}", account.id);
        if change.account != account_url {
            return Err(Problem::unauthorized(format!(
                "the key change names account {}, but was signed by {account_url}",
                change.account
            )));
        }
        if Jwk::from_value(&change.old_key).ok().as_ref() != Some(&account.key) {
            return Err(Problem::unauthorized(
                "oldKey is not the account's current key",
            ));
        }
        let store = self.authority.store();
        let new_thumbprint = new_key.thumbprint();
        if let Some(holder) = self.account_with_key(&new_thumbprint).await? {
            return Err(
                Problem::malformed("another account already has the new key")
                    .with_status(409)
                    .with_location(format!("{base}/account/{}", holder.id)),
            );
        }
        if !records::create(
            store,
            &records::account_by_key(&new_thumbprint),
            &account.id,
            None,
        )
        .await?
        {
            return Err(
                Problem::malformed("another account already has the new key").with_status(409),
            );
        }
        let key = records::account_key(&account.id);
        let current = verified
            .account
            .as_ref()
            .ok_or_else(|| Problem::internal(&"a verified kid request without its account"))?;
        let updated = AccountRecord {
            key: new_key,
            ..account.clone()
        };
        if !records::replace(store, &key, current, &updated, None).await? {
            // Undo the index: the account changed meanwhile.
            if let Some(index) =
                records::load::<String>(store, &records::account_by_key(&new_thumbprint)).await?
            {
                records::remove(store, &records::account_by_key(&new_thumbprint), &index).await?;
            }
            return Err(Problem::malformed(
                "the account changed while its key was being changed; try again",
            )
            .with_status(409));
        }
        let old_index = records::account_by_key(&account.key.thumbprint());
        if let Some(index) = records::load::<String>(store, &old_index).await? {
            records::remove(store, &old_index, &index).await?;
        }
        Ok(Answer::json(200, account_json(&base, &updated)).at(account_url))
    }
}

fn checked_contacts(contact: Vec<String>) -> Result<Vec<String>, Problem> {
    if contact.len() > MAX_CONTACTS {
        return Err(Problem::malformed(format!(
            "an account may list at most {MAX_CONTACTS} contacts"
        )));
    }
    for url in &contact {
        let Some(address) = url.strip_prefix("mailto:") else {
            return Err(Problem::new(
                ProblemType::UnsupportedContact,
                format!("{url:?}: certd takes mailto: contacts only"),
            ));
        };
        if url.len() > MAX_CONTACT_LEN || !is_mail_address(address) {
            return Err(Problem::new(
                ProblemType::InvalidContact,
                format!(
                    "{url:?} is not mailto: and one e-mail address (local@domain, no header fields, at most {MAX_CONTACT_LEN} characters)"
                ),
            ));
        }
    }
    Ok(contact)
}

/// One plain e-mail address (RFC 8555 §7.3: no header fields, one
/// recipient): a local part without spaces, `@`, and a DNS name.
fn is_mail_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '@' | ',' | '?' | '<' | '>')
        })
        && !domain.contains('?')
        && domain.parse::<crate::identity::DnsName>().is_ok()
}

/// The answer to newAccount with a key an account holds already: that
/// account (200), unless it was deactivated (RFC 8555 §7.3.6: its key
/// opens nothing again).
fn existing_account(base: &str, existing: AccountRecord) -> Result<Answer, Problem> {
    if existing.status == AccountStatus::Deactivated {
        return Err(Problem::unauthorized(format!(
            "account {} holding this key was deactivated",
            existing.id
        )));
    }
    Ok(Answer::json(200, account_json(base, &existing))
        .at(format!("{base}/account/{}", existing.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Contacts are mailto: URLs of one address each: another scheme is
    /// unsupportedContact, a bad address invalidContact.
    #[test]
    fn contacts_are_one_mail_address_each() {
        let check = |contact: &[&str], expected: Option<ProblemType>| {
            let outcome = checked_contacts(contact.iter().map(|c| (*c).to_owned()).collect());
            assert_eq!(outcome.err().map(|p| p.kind), expected, "{contact:?}");
        };
        check(&["mailto:ops@example.test"], None);
        check(&[], None);
        check(&["tel:+15551234"], Some(ProblemType::UnsupportedContact));
        check(
            &["https://example.test"],
            Some(ProblemType::UnsupportedContact),
        );
        for bad in [
            "mailto:",
            "mailto:ops",
            "mailto:@example.test",
            "mailto:ops@",
            "mailto:a@example.test,b@example.test",
            "mailto:ops@example.test?subject=hi",
            "mailto:o ps@example.test",
            "mailto:ops@not a domain",
        ] {
            check(&[bad], Some(ProblemType::InvalidContact));
        }
        check(&["mailto:a@example.test"; 11], Some(ProblemType::Malformed));
    }
}
