//! `#[derive(StreamKey)]`: an id type of the domain over a `StreamId` of one category.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Data, DeriveInput, Fields, LitStr, spanned::Spanned};

use crate::errors::{Errors, is_attr, shown, unknown_key};

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let ident = &input.ident;
    let field = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Unnamed(f) if f.unnamed.len() == 1 => f.unnamed.first(),
            _ => None,
        },
        _ => None,
    };
    let Some(field) = field else {
        return Err(syn::Error::new(
            ident.span(),
            format!(
                "`#[derive(StreamKey)]` needs a tuple struct of one `StreamId`: `pub struct {ident}(StreamId);`"
            ),
        ));
    };
    let category = category(input)?;
    // The field is read only through `KeyStream`, spanned at its type: a field that is not a
    // `StreamId` is reported there, once, naming the fix (each use of it, at the derive,
    // would report a mismatch of its own).
    let ty = &field.ty;
    let key_stream = quote_spanned!(ty.span()=> <#ty as ::eventcore::__derive::KeyStream>);
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut de_generics = input.generics.clone();
    de_generics.params.insert(0, syn::parse_quote!('de));
    let (de_impl_generics, _, _) = de_generics.split_for_impl();
    let type_name = syn::ext::IdentExt::unraw(ident).to_string();
    let prefix = format!("{}-", category.value());
    let serde = quote!(::eventcore::__derive::serde);
    let doc_category =
        format!("The stream category of every `{type_name}`: `{}`.", category.value());
    let doc_try_new = format!(
        "The `{type_name}` `id`, whose stream is `{prefix}{{id}}`.\n\n# Errors\n`eventcore::ValidationError` (naming `{type_name}`) when `id` is not a valid stream name on its own (empty, too long, a control character, leading or trailing whitespace) or the stream id it makes is too long."
    );
    let doc_from_stream_id = format!(
        "The `{type_name}` that names `stream`, a stream id `{prefix}{{id}}` (as a process manager or a projection gets it back from a recorded event).\n\n# Errors\n`eventcore::ValidationError` (naming `{type_name}`) when `stream` is not of category `{}`, or what follows `{prefix}` is not an id `try_new` takes.",
        category.value()
    );
    Ok(quote! {
        impl #impl_generics ::eventcore::StreamKey for #ident #ty_generics #where_clause {
            fn into_stream_id(self) -> ::eventcore::StreamId {
                #key_stream::into_stream(self.0)
            }
        }

        impl #impl_generics ::eventcore::RequestField for #ident #ty_generics #where_clause {
            fn write_to(&self, out: &mut ::eventcore::FieldWriter) {
                ::eventcore::RequestField::write_to(#key_stream::stream(&self.0), out);
            }
        }

        impl #impl_generics #ident #ty_generics #where_clause {
            #[doc = #doc_category]
            pub const CATEGORY: &'static str = #category;

            #[doc = #doc_try_new]
            pub fn try_new(id: &str) -> ::core::result::Result<Self, ::eventcore::ValidationError> {
                let named = |e: ::eventcore::ValidationError| {
                    ::eventcore::ValidationError::new(#type_name, ::std::string::ToString::to_string(e.reason()))
                };
                ::eventcore::StreamId::try_new(id).map_err(named)?;
                ::eventcore::StreamId::with_category(Self::CATEGORY, id)
                    .map(|stream| Self(#key_stream::from_stream(stream)))
                    .map_err(named)
            }

            #[doc = #doc_from_stream_id]
            pub fn from_stream_id(stream: &::eventcore::StreamId) -> ::core::result::Result<Self, ::eventcore::ValidationError> {
                match stream.as_str().strip_prefix(#prefix) {
                    ::core::option::Option::Some(id) => Self::try_new(id),
                    ::core::option::Option::None => ::core::result::Result::Err(::eventcore::ValidationError::new(
                        #type_name,
                        ::std::format!("`{}` is not a stream of category `{}`", stream.as_str(), #category),
                    )),
                }
            }

            /// The id within the category: the stream id without its `category-` prefix.
            #[must_use]
            pub fn id(&self) -> &str {
                let stream = #key_stream::stream(&self.0).as_str();
                match stream.strip_prefix(#prefix) {
                    ::core::option::Option::Some(id) => id,
                    ::core::option::Option::None => stream,
                }
            }

            /// The stream this id names.
            #[must_use]
            pub fn stream_id(&self) -> &::eventcore::StreamId {
                #key_stream::stream(&self.0)
            }
        }

        impl #impl_generics ::core::fmt::Display for #ident #ty_generics #where_clause {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.pad(self.id())
            }
        }

        impl #impl_generics ::core::str::FromStr for #ident #ty_generics #where_clause {
            type Err = ::eventcore::ValidationError;
            fn from_str(id: &str) -> ::core::result::Result<Self, Self::Err> {
                Self::try_new(id)
            }
        }

        impl #impl_generics #serde::Serialize for #ident #ty_generics #where_clause {
            fn serialize<S: #serde::Serializer>(&self, serializer: S) -> ::core::result::Result<S::Ok, S::Error> {
                // A key built around a stream of another category (by its tuple constructor,
                // not `try_new`) would come back as another stream: refused, not written.
                let stream = #key_stream::stream(&self.0).as_str();
                match stream.strip_prefix(#prefix) {
                    ::core::option::Option::Some(id) => serializer.serialize_str(id),
                    ::core::option::Option::None => ::core::result::Result::Err(
                        <S::Error as #serde::ser::Error>::custom(::core::format_args!(
                            "`{}` is not a stream of category `{}`, so it is not a {}: build one with `try_new`",
                            stream,
                            Self::CATEGORY,
                            #type_name,
                        )),
                    ),
                }
            }
        }

        impl #de_impl_generics #serde::Deserialize<'de> for #ident #ty_generics #where_clause {
            fn deserialize<D: #serde::Deserializer<'de>>(deserializer: D) -> ::core::result::Result<Self, D::Error> {
                let id = <::std::borrow::Cow<'de, str> as #serde::Deserialize>::deserialize(deserializer)?;
                Self::try_new(&id).map_err(<D::Error as #serde::de::Error>::custom)
            }
        }
    })
}

/// The longest category that leaves room in a stream id (`StreamId::MAX_LEN`, 255 bytes) for
/// the `-` and an id of one byte.
const MAX_CATEGORY_LEN: usize = 253;

/// The bidirectional formatting characters and the invisible characters `StreamId` refuses
/// (see `check_name` in eventcore's `types` module).
const UNSEEN: [char; 16] = [
    '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}',
    '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{180E}', '\u{200B}', '\u{2060}', '\u{FEFF}',
];

/// Whether a category may not hold `c`: `StreamId::check_category` (which every `try_new` runs)
/// refuses it, or whitespace, which a category does not have. Refused here, at the literal,
/// rather than by every `try_new`.
fn unseen(c: char) -> bool {
    c.is_whitespace() || c.is_control() || UNSEEN.contains(&c)
}

/// The `category` of the required `#[stream_key(category = "..")]`.
fn category(input: &DeriveInput) -> syn::Result<LitStr> {
    let mut errors = Errors::default();
    let mut category: Option<LitStr> = None;
    for attr in input.attrs.iter().filter(|a| is_attr(a, "stream_key")) {
        let parsed = attr.parse_nested_meta(|meta| {
            if !meta.path.is_ident("category") {
                let message = format!(
                    "unknown key `{}` in `#[stream_key(..)]`; expected `category = \"..\"`",
                    shown(&meta.path)
                );
                return unknown_key(&meta, &mut errors, message);
            }
            let lit: LitStr = meta.value()?.parse()?;
            let value = lit.value();
            if value.is_empty() || value.chars().any(unseen) {
                errors.push(syn::Error::new(
                    lit.span(),
                    "a stream category is a non-empty name without whitespace, control, invisible or bidirectional formatting characters, e.g. `category = \"account\"`",
                ));
            } else if value.len() > MAX_CATEGORY_LEN {
                errors.push(syn::Error::new(
                    lit.span(),
                    format!(
                        "a stream category is at most {MAX_CATEGORY_LEN} bytes long: a stream id (`{{category}}-{{id}}`) is at most 255, and the id is at least one"
                    ),
                ));
            } else if value.contains('-') {
                errors.push(syn::Error::new(
                    lit.span(),
                    "a stream category cannot contain `-`: a stream's category is the text of its id before the first `-`, so these streams would be in another category; use `_`",
                ));
            }
            if category.replace(lit).is_some() {
                errors.push(meta.error("`category` is given twice in `#[stream_key(..)]`"));
            }
            Ok(())
        });
        errors.check(parsed);
    }
    errors.finish()?;
    category.ok_or_else(|| {
        syn::Error::new(
            input.ident.span(),
            "`#[derive(StreamKey)]` needs the ids' stream category: `#[stream_key(category = \"account\")]` makes `account-{id}` streams",
        )
    })
}
