//! The ACME admin RPCs (`certd acme …`): wire types in, `acme::admin` out.
//! `api::admin` authorizes each call first and hands it here.

use std::time::Duration;

use tonic::{Response, Status};

use super::proto;
use super::status;
use crate::acme::admin::{self, AccountView, OrderView};
use crate::authority::{Authority, Caller};

fn refused(error: admin::AcmeAdminError) -> Status {
    status(&crate::Error::from(error))
}

pub(super) async fn create_eab(
    authority: &Authority,
    caller: &Caller,
    request: proto::CreateAcmeEabRequest,
) -> Result<Response<proto::AcmeEab>, Status> {
    let ttl = (request.ttl_seconds > 0).then(|| Duration::from_secs(request.ttl_seconds));
    let created = admin::create_eab(authority, caller, &request.entry_id, ttl)
        .await
        .map_err(refused)?;
    Ok(Response::new(proto::AcmeEab {
        key_id: created.key_id,
        hmac_key: created.hmac_key,
        entry_id: created.entry,
        expires_at: created.expires_at,
    }))
}

pub(super) async fn set_policy(
    authority: &Authority,
    caller: &Caller,
    request: proto::SetAcmePolicyRequest,
) -> Result<Response<proto::AcmePolicy>, Status> {
    let policy = admin::set_policy(
        authority,
        caller,
        &request.entry_id,
        &request.challenges,
        request.without_challenges,
    )
    .await
    .map_err(refused)?;
    Ok(Response::new(proto::AcmePolicy {
        entry_id: request.entry_id,
        challenges: policy.challenges,
        without_challenges: policy.without_challenges,
    }))
}

pub(super) async fn policy(
    authority: &Authority,
    request: proto::GetAcmePolicyRequest,
) -> Result<Response<proto::AcmePolicy>, Status> {
    let policy = admin::policy(authority, &request.entry_id)
        .await
        .map_err(refused)?;
    Ok(Response::new(proto::AcmePolicy {
        entry_id: request.entry_id,
        challenges: policy.challenges,
        without_challenges: policy.without_challenges,
    }))
}

pub(super) async fn accounts(
    authority: &Authority,
) -> Result<Response<proto::ListAcmeAccountsResponse>, Status> {
    let accounts = admin::accounts(authority).await.map_err(refused)?;
    Ok(Response::new(proto::ListAcmeAccountsResponse {
        accounts: accounts.into_iter().map(account_to_proto).collect(),
    }))
}

pub(super) async fn deactivate_account(
    authority: &Authority,
    caller: &Caller,
    request: proto::DeactivateAcmeAccountRequest,
) -> Result<Response<proto::AcmeAccount>, Status> {
    let account = admin::deactivate_account(authority, caller, &request.id)
        .await
        .map_err(refused)?;
    Ok(Response::new(account_to_proto(account)))
}

/// Orders listed when the caller asks for no particular number.
const DEFAULT_ORDER_LIST_LIMIT: usize = 1000;
/// Most orders one page holds.
const MAX_ORDER_LIST_LIMIT: usize = 10_000;

pub(super) async fn orders(
    authority: &Authority,
    request: proto::ListAcmeOrdersRequest,
) -> Result<Response<proto::ListAcmeOrdersResponse>, Status> {
    let account = (!request.account_id.is_empty()).then_some(request.account_id.as_str());
    let page_token = (!request.page_token.is_empty()).then_some(request.page_token.as_str());
    let limit = match request.limit {
        0 => DEFAULT_ORDER_LIST_LIMIT,
        limit => (limit as usize).min(MAX_ORDER_LIST_LIMIT),
    };
    let page = admin::orders(authority, account, page_token, limit)
        .await
        .map_err(refused)?;
    Ok(Response::new(proto::ListAcmeOrdersResponse {
        orders: page.orders.into_iter().map(order_to_proto).collect(),
        next_page_token: page.next_page_token.unwrap_or_default(),
    }))
}

fn account_to_proto(account: AccountView) -> proto::AcmeAccount {
    proto::AcmeAccount {
        id: account.id,
        status: account.status,
        entry_id: account.entry.unwrap_or_default(),
        contact: account.contact,
        created_at: account.created_at,
        key_thumbprint: account.key_thumbprint,
    }
}

fn order_to_proto(order: OrderView) -> proto::AcmeOrder {
    proto::AcmeOrder {
        id: order.id,
        account_id: order.account,
        entry_id: order.entry,
        status: order.status,
        identifiers: order.identifiers,
        expires_at: order.expires_at,
        certificate_serial: order.certificate.unwrap_or_default(),
        created_at: order.created_at,
    }
}
