//! The ACME admin RPCs' client side (`certd acme …`), with the views the
//! CLI prints (their JSON is what `--json` prints).

use std::time::Duration;

use super::AdminClient;
use crate::api::client::{ClientError, refused};
use crate::api::proto;

/// A new EAB key: the key id and HMAC key an ACME client is given.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AcmeEabView {
    pub key_id: String,
    pub hmac_key: String,
    pub entry: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AcmePolicyView {
    pub entry: String,
    pub challenges: Vec<String>,
    pub without_challenges: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AcmeAccountView {
    pub id: String,
    pub status: String,
    /// `None` for an account made without EAB.
    pub entry: Option<String>,
    pub contact: Vec<String>,
    pub created_at: i64,
    pub key_thumbprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AcmeOrderView {
    pub id: String,
    pub account: String,
    pub entry: String,
    pub status: String,
    pub identifiers: Vec<String>,
    pub expires_at: i64,
    /// The serial of its certificate, once issued.
    pub certificate: Option<String>,
    pub created_at: i64,
}

impl From<proto::AcmePolicy> for AcmePolicyView {
    fn from(policy: proto::AcmePolicy) -> Self {
        AcmePolicyView {
            entry: policy.entry_id,
            challenges: policy.challenges,
            without_challenges: policy.without_challenges,
        }
    }
}

impl From<proto::AcmeAccount> for AcmeAccountView {
    fn from(account: proto::AcmeAccount) -> Self {
        AcmeAccountView {
            id: account.id,
            status: account.status,
            entry: (!account.entry_id.is_empty()).then_some(account.entry_id),
            contact: account.contact,
            created_at: account.created_at,
            key_thumbprint: account.key_thumbprint,
        }
    }
}

impl From<proto::AcmeOrder> for AcmeOrderView {
    fn from(order: proto::AcmeOrder) -> Self {
        AcmeOrderView {
            id: order.id,
            account: order.account_id,
            entry: order.entry_id,
            status: order.status,
            identifiers: order.identifiers,
            expires_at: order.expires_at,
            certificate: (!order.certificate_serial.is_empty()).then_some(order.certificate_serial),
            created_at: order.created_at,
        }
    }
}

impl AdminClient {
    /// A new EAB key for entry `entry`, valid for `ttl` (`None`: 1 hour).
    pub async fn create_acme_eab(
        &mut self,
        entry: &str,
        ttl: Option<Duration>,
    ) -> Result<AcmeEabView, ClientError> {
        let eab = self
            .rpc
            .create_acme_eab(proto::CreateAcmeEabRequest {
                entry_id: entry.to_owned(),
                ttl_seconds: ttl.map_or(0, |ttl| ttl.as_secs().max(1)),
            })
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        Ok(AcmeEabView {
            key_id: eab.key_id,
            hmac_key: eab.hmac_key,
            entry: eab.entry_id,
            expires_at: eab.expires_at,
        })
    }

    pub async fn set_acme_policy(
        &mut self,
        entry: &str,
        challenges: &[String],
        without_challenges: bool,
    ) -> Result<AcmePolicyView, ClientError> {
        let policy = self
            .rpc
            .set_acme_policy(proto::SetAcmePolicyRequest {
                entry_id: entry.to_owned(),
                challenges: challenges.to_vec(),
                without_challenges,
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(policy.into_inner().into())
    }

    pub async fn acme_policy(&mut self, entry: &str) -> Result<AcmePolicyView, ClientError> {
        let policy = self
            .rpc
            .get_acme_policy(proto::GetAcmePolicyRequest {
                entry_id: entry.to_owned(),
            })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(policy.into_inner().into())
    }

    pub async fn acme_accounts(&mut self) -> Result<Vec<AcmeAccountView>, ClientError> {
        let response = self
            .rpc
            .list_acme_accounts(proto::ListAcmeAccountsRequest {})
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(response
            .into_inner()
            .accounts
            .into_iter()
            .map(AcmeAccountView::from)
            .collect())
    }

    pub async fn deactivate_acme_account(
        &mut self,
        id: &str,
    ) -> Result<AcmeAccountView, ClientError> {
        let account = self
            .rpc
            .deactivate_acme_account(proto::DeactivateAcmeAccountRequest { id: id.to_owned() })
            .await
            .map_err(|s| refused(&self.target, s))?;
        Ok(account.into_inner().into())
    }

    /// Every order (or one account's), asked for a page at a time, so no
    /// one request makes the daemon read them all.
    pub async fn acme_orders(
        &mut self,
        account: Option<&str>,
    ) -> Result<Vec<AcmeOrderView>, ClientError> {
        let mut orders = Vec::new();
        let mut page_token = None;
        loop {
            let (page, next) = self
                .acme_orders_page(account, page_token.as_deref(), 0)
                .await?;
            orders.extend(page);
            match next {
                Some(next) => page_token = Some(next),
                None => return Ok(orders),
            }
        }
    }

    /// One page of orders (`limit` 0: the daemon's default) after
    /// `page_token`, and the next page's token.
    pub async fn acme_orders_page(
        &mut self,
        account: Option<&str>,
        page_token: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<AcmeOrderView>, Option<String>), ClientError> {
        let response = self
            .rpc
            .list_acme_orders(proto::ListAcmeOrdersRequest {
                account_id: account.unwrap_or_default().to_owned(),
                limit,
                page_token: page_token.unwrap_or_default().to_owned(),
            })
            .await
            .map_err(|s| refused(&self.target, s))?
            .into_inner();
        let next = (!response.next_page_token.is_empty()).then_some(response.next_page_token);
        Ok((
            response
                .orders
                .into_iter()
                .map(AcmeOrderView::from)
                .collect(),
            next,
        ))
    }
}
