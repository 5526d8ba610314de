//! CardStock: the cards that may be issued, and which present ones are bound by themselves.

use std::borrow::Cow;
use std::path::PathBuf;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::CardType;
use crate::policy::secret::SecretRef;

/// Cards that may be issued, and whether a present one may be bound automatically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawCardStockSpec", into = "RawCardStockSpec")]
pub struct CardStockSpec {
    /// The kind of card in this stock.
    pub card_type: CardType,
    /// A present, unbound card may be bound to a pending user.
    pub auto_bind: bool,
    /// Which cards belong to the stock.
    pub selector: StockSelector,
}

/// Which cards belong to a stock: exactly one of `virtual`, `piv`, `pkcs11` in the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum StockSelector {
    /// Virtual cards, created on demand.
    Virtual(VirtualStock),
    /// PIV cards.
    Piv(PivStock),
    /// PKCS#11 tokens.
    Pkcs11(Pkcs11Stock),
}

impl StockSelector {
    /// The key the selector is written under.
    pub const fn key(&self) -> &'static str {
        match self {
            StockSelector::Virtual(_) => "virtual",
            StockSelector::Piv(_) => "piv",
            StockSelector::Pkcs11(_) => "pkcs11",
        }
    }
}

/// Virtual cards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualStock {
    /// At most this many virtual cards exist at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// PIV cards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PivStock {
    /// Any blank PIV card (factory defaults) belongs to the stock.
    #[serde(default)]
    pub any_blank: bool,
    /// Cards by CHUID GUID (32 hex digits).
    #[serde(default)]
    pub guids: Vec<String>,
    /// Cards by serial number.
    #[serde(default)]
    pub serials: Vec<String>,
}

/// PKCS#11 tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pkcs11Stock {
    /// The PKCS#11 module (shared library) path.
    pub module: PathBuf,
    /// Tokens whose label starts with this belong to the stock.
    pub token_label_prefix: String,
    /// The security officer PIN.
    pub so_pin: SecretRef,
}

/// The YAML shape of a card stock, before the exactly-one-selector check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCardStockSpec {
    /// The kind of card in this stock.
    card_type: CardType,
    /// A present, unbound card may be bound to a pending user (default false).
    #[serde(default)]
    auto_bind: bool,
    /// Virtual cards, created on demand.
    #[serde(default, rename = "virtual", skip_serializing_if = "Option::is_none")]
    virtual_: Option<VirtualStock>,
    /// PIV cards by GUID or serial, or any blank one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    piv: Option<PivStock>,
    /// PKCS#11 tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pkcs11: Option<Pkcs11Stock>,
}

/// A card stock without exactly one selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a CardStock needs exactly one of `virtual`, `piv` or `pkcs11`")]
pub struct StockSelectorError;

impl TryFrom<RawCardStockSpec> for CardStockSpec {
    type Error = StockSelectorError;

    fn try_from(raw: RawCardStockSpec) -> Result<Self, Self::Error> {
        let selector = match (raw.virtual_, raw.piv, raw.pkcs11) {
            (Some(v), None, None) => StockSelector::Virtual(v),
            (None, Some(p), None) => StockSelector::Piv(p),
            (None, None, Some(p)) => StockSelector::Pkcs11(p),
            _ => return Err(StockSelectorError),
        };
        Ok(CardStockSpec {
            card_type: raw.card_type,
            auto_bind: raw.auto_bind,
            selector,
        })
    }
}

impl From<CardStockSpec> for RawCardStockSpec {
    fn from(s: CardStockSpec) -> Self {
        let mut raw = RawCardStockSpec {
            card_type: s.card_type,
            auto_bind: s.auto_bind,
            virtual_: None,
            piv: None,
            pkcs11: None,
        };
        match s.selector {
            StockSelector::Virtual(v) => raw.virtual_ = Some(v),
            StockSelector::Piv(p) => raw.piv = Some(p),
            StockSelector::Pkcs11(p) => raw.pkcs11 = Some(p),
        }
        raw
    }
}

impl JsonSchema for CardStockSpec {
    fn schema_name() -> Cow<'static, str> {
        "CardStockSpec".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = RawCardStockSpec::json_schema(generator);
        schema.insert(
            "description".into(),
            "Cards that may be issued: cardType, autoBind and exactly one of virtual, piv, pkcs11."
                .into(),
        );
        schema.insert(
            "oneOf".into(),
            serde_json::json!([
                {"required": ["virtual"]},
                {"required": ["piv"]},
                {"required": ["pkcs11"]}
            ]),
        );
        schema
    }
}
