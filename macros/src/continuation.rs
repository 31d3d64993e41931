//! `#[continuation(..)]`: the associated types of an `impl Continuation`, from the step it
//! continues.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::Type;

use crate::errors::{Errors, shown, unknown_key};

/// What `#[continuation(..)]` says.
#[derive(Default)]
struct Options {
    /// `command = C`: the first round after command `C`.
    command: Option<Type>,
    /// `after = K`: the round after continuation `K`.
    after: Option<Type>,
    slot: Option<Type>,
    next: Option<Type>,
}

const USAGE: &str = "e.g. `#[continuation(command = CancelOrder, slot = Products)]`, or `#[continuation(after = ReleaseStock, slot = Customer, next = ..)]` for a later round";

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let mut options = Options::default();
    let mut in_args = Errors::default();
    let parser = syn::meta::parser(|meta| {
        let key = shown(&meta.path);
        let target = match key.as_str() {
            "command" => &mut options.command,
            "after" => &mut options.after,
            "slot" => &mut options.slot,
            "next" => &mut options.next,
            _ => {
                return unknown_key(
                    &meta,
                    &mut in_args,
                    format!(
                        "unknown key `{key}` in `#[continuation(..)]`; expected `command = Type` (or `after = Type`), `slot = Type` and optionally `next = Type`"
                    ),
                );
            }
        };
        let ty: Type = meta.value()?.parse()?;
        if target.replace(ty).is_some() {
            in_args.push(meta.error(format!("`{key}` is given twice in `#[continuation(..)]`")));
        }
        Ok(())
    });
    // The whole argument list, to point at when an argument is missing.
    let whole = args.clone();
    let parsed = syn::parse::Parser::parse2(parser, args);
    errors.check(in_args.finish());
    errors.check(parsed);

    let item = match syn::parse2::<ImplBlock>(item) {
        Ok(item) => item,
        Err(e) => {
            return Err(syn::Error::new(
                e.span(),
                "`#[continuation(..)]` goes on an `impl Continuation for YourType { fn resume(..) }` block",
            ));
        }
    };
    if item.trait_.segments.last().is_none_or(|last| last.ident != "Continuation") {
        errors.push(syn::Error::new_spanned(
            &item.self_ty,
            "`#[continuation(..)]` goes on an `impl Continuation for YourType` block, whose `resume` it leaves as written",
        ));
    }
    for name in item.associated_types() {
        let shown = name.to_string();
        if ["Prior", "Slot", "State", "Error", "Next"].contains(&shown.as_str()) {
            errors.push(syn::Error::new_spanned(
                name,
                format!(
                    "`type {shown}` is written by `#[continuation(..)]`: remove it here (the attribute takes the step it continues, its `slot` and its `next`)"
                ),
            ));
        }
    }
    let prior = match (&options.command, &options.after) {
        (Some(command), None) => Some((
            quote!(<#command as ::eventcore::Command>::Streams),
            quote!(<#command as ::eventcore::Command>::State),
            quote!(<#command as ::eventcore::Command>::Error),
        )),
        (None, Some(after)) => Some((
            quote!(::eventcore::Extended<
                <#after as ::eventcore::Continuation>::Prior,
                <#after as ::eventcore::Continuation>::Slot,
            >),
            quote!(<#after as ::eventcore::Continuation>::State),
            quote!(<#after as ::eventcore::Continuation>::Error),
        )),
        (Some(_), Some(after)) => {
            errors.push(syn::Error::new_spanned(
                after,
                "`#[continuation(..)]` takes `command = ..` (the first round after a command) or `after = ..` (the round after another continuation), not both",
            ));
            None
        }
        (None, None) => {
            errors.push(syn::Error::new_spanned(
                &whole,
                format!("`#[continuation(..)]` needs the step it continues: `command = Type` or `after = Type`; {USAGE}"),
            ));
            None
        }
    };
    if options.slot.is_none() {
        errors.push(syn::Error::new_spanned(
            &whole,
            format!("`#[continuation(..)]` needs `slot = Type`: the slot whose streams it discovers; {USAGE}"),
        ));
    }
    errors.finish()?;
    let (Some((prior, state, error)), Some(slot)) = (prior, options.slot) else {
        // Not reached: both were reported above, so `finish` returned them.
        return Err(syn::Error::new_spanned(&whole, USAGE));
    };
    let next =
        options.next.map_or_else(|| quote!(::eventcore::NoDiscovery), |n| n.into_token_stream());
    let types = quote! {
        type Prior = #prior;
        type Slot = #slot;
        type State = #state;
        type Error = #error;
        type Next = #next;
    };
    Ok(item.with_leading_items(types))
}

/// An `impl Trait for Type { .. }` block, read only as far as the macro needs: its header is
/// parsed, its body kept as the tokens written. Parsing the body (`resume` and all it does)
/// with syn and printing it back cost most of the attribute's time in `cargo check` (issue #17),
/// and the body goes back to the compiler unchanged.
struct ImplBlock {
    /// Attributes, `unsafe`, `impl` and generics: everything before the trait, as written.
    head: TokenStream,
    trait_: syn::Path,
    for_token: syn::Token![for],
    self_ty: Type,
    where_clause: Option<syn::WhereClause>,
    body: proc_macro2::Group,
}

impl syn::parse::Parse for ImplBlock {
    fn parse(input: syn::parse::ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(syn::Attribute::parse_outer)?;
        let unsafety: Option<syn::Token![unsafe]> = input.parse()?;
        let impl_token: syn::Token![impl] = input.parse()?;
        let generics: syn::Generics = input.parse()?;
        let trait_: syn::Path = input.parse()?;
        let for_token = input.parse()?;
        let self_ty = input.parse()?;
        let where_clause = input.parse()?;
        let body: proc_macro2::Group = input.parse()?;
        if body.delimiter() != proc_macro2::Delimiter::Brace {
            return Err(syn::Error::new(body.span(), "expected the impl's `{ .. }` body"));
        }
        let head = quote!(#(#attrs)* #unsafety #impl_token #generics);
        Ok(ImplBlock { head, trait_, for_token, self_ty, where_clause, body })
    }
}

impl ImplBlock {
    /// The names of the associated types the body declares (`type Name`, at its top level).
    fn associated_types(&self) -> impl Iterator<Item = proc_macro2::Ident> {
        let mut previous_was_type = false;
        self.body.stream().into_iter().filter_map(move |tree| {
            let proc_macro2::TokenTree::Ident(ident) = tree else {
                previous_was_type = false;
                return None;
            };
            std::mem::replace(&mut previous_was_type, ident == "type").then_some(ident)
        })
    }

    /// The block with `items` ahead of the items written in its body (after its inner
    /// attributes, `#![..]`, which open the block or are refused there).
    fn with_leading_items(self, items: TokenStream) -> TokenStream {
        use proc_macro2::TokenTree;
        let ImplBlock { head, trait_, for_token, self_ty, where_clause, body } = self;
        let written: Vec<TokenTree> = body.stream().into_iter().collect();
        let inner_attribute = |trees: &[TokenTree]| match trees {
            [TokenTree::Punct(hash), TokenTree::Punct(bang), TokenTree::Group(attr), ..] => {
                hash.as_char() == '#'
                    && bang.as_char() == '!'
                    && attr.delimiter() == proc_macro2::Delimiter::Bracket
            }
            _ => false,
        };
        let mut at = 0;
        while inner_attribute(&written[at..]) {
            at += 3;
        }
        let mut inner: TokenStream = written[..at].iter().cloned().collect();
        inner.extend(items);
        inner.extend(written[at..].iter().cloned());
        let mut braces = proc_macro2::Group::new(proc_macro2::Delimiter::Brace, inner);
        braces.set_span(body.span());
        quote!(#head #trait_ #for_token #self_ty #where_clause #braces)
    }
}
