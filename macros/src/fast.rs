//! The fast path of `#[derive(Command)]` and `#[derive(Fold)]`, for the plain form the book
//! teaches (issue #17).
//!
//! A derive runs inside every `cargo check`, and a dev profile builds proc macros without
//! optimizations: parsing a command with syn and printing its impl with `quote!` cost about
//! 1.2 M instructions per command, a tenth of what checking the whole command costs. The fast
//! path reads the input's tokens directly and writes the output tree by tree through the
//! compiler's own `proc_macro` API (built optimized, with the compiler), for a fraction of that.
//!
//! It takes only input it reads with certainty: no generics, slots written as names, state,
//! error and key types written as paths, no mistakes. Anything else (a generic command, a
//! tuple state, a mistake to report) returns `None`, and the derive goes the full way through
//! syn, which reports errors with their fixes.
//!
//! Both paths write the same tokens with the same spans. The code is generic over the token
//! API ([`Api`]): the derives run it on `proc_macro`, and the macro tests run the same code on
//! `proc_macro2` (which works outside a macro) and compare its output with the full path's on
//! every input they expand; the ui tests, whose inputs take the fast path, check the spans.

/// A group's delimiter, in either API.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Delim {
    Parenthesis,
    Brace,
    Bracket,
    None,
}

/// What a token tree is, in either API.
pub(crate) enum View<A: Api> {
    Ident(String),
    /// The character, and whether it is joined to the next one.
    Punct(char, bool),
    Group(Delim, A::Stream),
    Literal,
}

/// The token API the fast path runs on: `proc_macro` in the derives, `proc_macro2` in tests.
pub(crate) trait Api: Sized {
    type Stream: IntoIterator<Item = Self::Tree> + FromIterator<Self::Tree>;
    type Tree: Clone;
    type Span: Copy;

    fn view(tree: &Self::Tree) -> View<Self>;
    fn span(tree: &Self::Tree) -> Self::Span;
    fn join(first: Self::Span, last: Self::Span) -> Option<Self::Span>;
    fn call_site() -> Self::Span;
    fn ident(name: &str, span: Self::Span) -> Self::Tree;
    fn punct(c: char, joint: bool, span: Self::Span) -> Self::Tree;
    fn group(delim: Delim, stream: Self::Stream, span: Self::Span) -> Self::Tree;
}

/// `impl Api` for one of the two token crates, which spell the same API: `$krate` is
/// `proc_macro` or `proc_macro2`, `$join` how spans are joined.
macro_rules! token_api {
    ($api:ty, $krate:ident, $join:expr) => {
        impl Api for $api {
            type Stream = $krate::TokenStream;
            type Tree = $krate::TokenTree;
            type Span = $krate::Span;

            fn view(tree: &Self::Tree) -> View<Self> {
                use $krate::{Delimiter, Spacing, TokenTree};
                match tree {
                    TokenTree::Ident(i) => View::Ident(i.to_string()),
                    TokenTree::Punct(p) => View::Punct(p.as_char(), p.spacing() == Spacing::Joint),
                    TokenTree::Group(g) => View::Group(
                        match g.delimiter() {
                            Delimiter::Parenthesis => Delim::Parenthesis,
                            Delimiter::Brace => Delim::Brace,
                            Delimiter::Bracket => Delim::Bracket,
                            Delimiter::None => Delim::None,
                        },
                        g.stream(),
                    ),
                    TokenTree::Literal(_) => View::Literal,
                }
            }

            fn span(tree: &Self::Tree) -> Self::Span {
                tree.span()
            }

            fn join(first: Self::Span, last: Self::Span) -> Option<Self::Span> {
                let join: fn(Self::Span, Self::Span) -> Option<Self::Span> = $join;
                join(first, last)
            }

            fn call_site() -> Self::Span {
                $krate::Span::call_site()
            }

            fn ident(name: &str, span: Self::Span) -> Self::Tree {
                $krate::Ident::new(name, span).into()
            }

            fn punct(c: char, joint: bool, span: Self::Span) -> Self::Tree {
                let spacing = if joint { $krate::Spacing::Joint } else { $krate::Spacing::Alone };
                let mut p = $krate::Punct::new(c, spacing);
                p.set_span(span);
                p.into()
            }

            fn group(delim: Delim, stream: Self::Stream, span: Self::Span) -> Self::Tree {
                use $krate::Delimiter;
                let delimiter = match delim {
                    Delim::Parenthesis => Delimiter::Parenthesis,
                    Delim::Brace => Delimiter::Brace,
                    Delim::Bracket => Delimiter::Bracket,
                    Delim::None => Delimiter::None,
                };
                let mut g = $krate::Group::new(delimiter, stream);
                g.set_span(span);
                g.into()
            }
        }
    };
}

/// `proc_macro`: the compiler's API, usable only inside a macro.
pub(crate) struct Compiler;

// Spans are not joined: what proc-macro2 does inside a macro on a stable compiler, where the
// full path's syn asks it to join, and syn then keeps the first token's span.
token_api!(Compiler, proc_macro, |_, _| None);

/// `proc_macro2`, for the tests (outside a macro it is its own implementation).
#[cfg(test)]
pub(crate) struct Fallback;

#[cfg(test)]
token_api!(Fallback, proc_macro2, |first, last| first.join(last));

/// Output written one tree at a time, each token it makes spanned at `span`.
pub(crate) struct Out<A: Api> {
    trees: Vec<A::Tree>,
    span: A::Span,
}

impl<A: Api> Out<A> {
    pub(crate) fn new(span: A::Span) -> Self {
        Out { trees: Vec::new(), span }
    }

    /// Spans the tokens written after this call at `span`.
    pub(crate) fn at(&mut self, span: A::Span) -> &mut Self {
        self.span = span;
        self
    }

    pub(crate) fn ident(&mut self, name: &str) -> &mut Self {
        self.trees.push(A::ident(name, self.span));
        self
    }

    /// Punctuation, joined as `quote!` joins it: `::` and `->` are one joint pair.
    pub(crate) fn punct(&mut self, text: &str) -> &mut Self {
        let last = text.len() - 1;
        for (i, c) in text.chars().enumerate() {
            self.trees.push(A::punct(c, i < last, self.span));
        }
        self
    }

    /// A path written `::a::b` or `a::b`.
    pub(crate) fn path(&mut self, path: &str) -> &mut Self {
        let (absolute, rest) = match path.strip_prefix("::") {
            Some(rest) => (true, rest),
            None => (false, path),
        };
        for (i, segment) in rest.split("::").enumerate() {
            if absolute || i > 0 {
                self.punct("::");
            }
            self.ident(segment);
        }
        self
    }

    /// The user's tokens, as written (with their own spans).
    pub(crate) fn tokens(&mut self, tokens: &[A::Tree]) -> &mut Self {
        self.trees.extend(tokens.iter().cloned());
        self
    }

    pub(crate) fn tree(&mut self, tree: &A::Tree) -> &mut Self {
        self.trees.push(tree.clone());
        self
    }

    /// A group written by `inner`, spanned like the tokens around it.
    pub(crate) fn group(&mut self, delim: Delim, inner: impl FnOnce(&mut Out<A>)) -> &mut Self {
        let mut out = Out::new(self.span);
        inner(&mut out);
        self.trees.push(A::group(delim, out.finish(), self.span));
        self
    }

    pub(crate) fn finish(self) -> A::Stream {
        self.trees.into_iter().collect()
    }
}

fn is_punct<A: Api>(tree: &A::Tree, c: char) -> bool {
    matches!(A::view(tree), View::Punct(p, _) if p == c)
}

fn is_ident<A: Api>(tree: &A::Tree, name: &str) -> bool {
    matches!(A::view(tree), View::Ident(i) if i == name)
}

/// The parts of a struct the fast path reads.
pub(crate) struct Struct<A: Api> {
    /// Its outer attributes: the trees inside each `#[..]`.
    pub(crate) attrs: Vec<Vec<A::Tree>>,
    pub(crate) ident: A::Tree,
    pub(crate) name: String,
    /// The body, `{ .. }` or `( .. )`, and which; `None` for a unit struct.
    pub(crate) body: Option<(Delim, A::Stream)>,
}

/// Reads `#[..]* vis struct Name body`, or `None` for anything else (an enum, generics, a
/// where clause).
pub(crate) fn plain_struct<A: Api>(input: A::Stream) -> Option<Struct<A>> {
    let trees: Vec<A::Tree> = input.into_iter().collect();
    let mut at = 0;
    let attrs = attributes::<A>(&trees, &mut at)?;
    at = after_visibility::<A>(&trees, at);
    if !is_ident::<A>(trees.get(at)?, "struct") {
        return None;
    }
    let ident = trees.get(at + 1)?.clone();
    let View::Ident(name) = A::view(&ident) else { return None };
    // A raw identifier (`r#Type`) cannot be rebuilt from its text: the full path takes it.
    if name.starts_with("r#") {
        return None;
    }
    // `;`, `{ .. }` or `( .. );`, and nothing after it.
    let body = match &trees[at + 2..] {
        [semi] if is_punct::<A>(semi, ';') => None,
        [body] => match A::view(body) {
            View::Group(Delim::Brace, stream) => Some((Delim::Brace, stream)),
            _ => return None,
        },
        [body, semi] if is_punct::<A>(semi, ';') => match A::view(body) {
            View::Group(Delim::Parenthesis, stream) => Some((Delim::Parenthesis, stream)),
            _ => return None,
        },
        _ => return None,
    };
    Some(Struct { attrs, ident, name, body })
}

/// The `#[..]` attributes from `at` on: the trees inside each. `None` if one holds an invisible
/// group (an attribute a `macro_rules!` passed on as a fragment, `#[$attr]`): it may be a
/// `#[slot(..)]` the fast path would not see, so the full path reads it.
fn attributes<A: Api>(trees: &[A::Tree], at: &mut usize) -> Option<Vec<Vec<A::Tree>>> {
    let mut attrs = Vec::new();
    while let Some(tree) = trees.get(*at) {
        if !is_punct::<A>(tree, '#') {
            break;
        }
        match A::view(trees.get(*at + 1)?) {
            View::Group(Delim::Bracket, inner) => {
                let inner: Vec<A::Tree> = inner.into_iter().collect();
                if hides_a_fragment::<A>(&inner) {
                    return None;
                }
                attrs.push(inner);
            }
            _ => return None,
        }
        *at += 2;
    }
    Some(attrs)
}

/// Whether an attribute's trees hold an invisible group: a fragment a `macro_rules!` passed
/// on (`#[$attr]`), which may be any attribute, `#[slot(..)]` or `#[fold(..)]` included.
fn hides_a_fragment<A: Api>(attr: &[A::Tree]) -> bool {
    attr.iter().any(|tree| matches!(A::view(tree), View::Group(Delim::None, _)))
}

/// The position after `pub` or `pub(..)` at `at`, if any.
fn after_visibility<A: Api>(trees: &[A::Tree], at: usize) -> usize {
    match trees.get(at) {
        Some(word) if is_ident::<A>(word, "pub") => match trees.get(at + 1).map(A::view) {
            Some(View::Group(Delim::Parenthesis, _)) => at + 2,
            _ => at + 1,
        },
        _ => at,
    }
}

/// Whether an attribute's trees start with the word `name`, or `r#name` (the same attribute to
/// the compiler).
pub(crate) fn named<A: Api>(attr: &[A::Tree], name: &str) -> bool {
    attr.first().is_some_and(|first| {
        matches!(A::view(first), View::Ident(i) if i.strip_prefix("r#").unwrap_or(&i) == name)
    })
}

/// The trees inside `name(..)`, when that is the whole attribute.
pub(crate) fn list<A: Api>(attr: &[A::Tree], name: &str) -> Option<Vec<A::Tree>> {
    match attr {
        [word, group] if is_ident::<A>(word, name) => match A::view(group) {
            View::Group(Delim::Parenthesis, stream) => Some(stream.into_iter().collect()),
            _ => None,
        },
        _ => None,
    }
}

/// A named field: its attributes, name and type.
pub(crate) struct Field<A: Api> {
    pub(crate) attrs: Vec<Vec<A::Tree>>,
    pub(crate) ident: A::Tree,
    pub(crate) ty: Vec<A::Tree>,
}

/// The fields of `{ .. }`, or `None` if one is not read with certainty.
pub(crate) fn named_fields<A: Api>(body: A::Stream) -> Option<Vec<Field<A>>> {
    let trees: Vec<A::Tree> = body.into_iter().collect();
    let mut at = 0;
    let mut fields = Vec::new();
    while at < trees.len() {
        let attrs = attributes::<A>(&trees, &mut at)?;
        at = after_visibility::<A>(&trees, at);
        let ident = trees.get(at)?.clone();
        if !matches!(A::view(&ident), View::Ident(_)) {
            return None;
        }
        match A::view(trees.get(at + 1)?) {
            View::Punct(':', false) => {}
            _ => return None,
        }
        at += 2;
        let ty = until_comma::<A>(&trees, &mut at)?;
        if ty.is_empty() {
            return None;
        }
        fields.push(Field { attrs, ident, ty });
    }
    Some(fields)
}

/// The trees from `at` up to the next comma outside `<..>` (`at` moves past it), or the end.
/// `None` for trees whose nesting is not read with certainty (`=`, a `>` closing nothing).
pub(crate) fn until_comma<A: Api>(trees: &[A::Tree], at: &mut usize) -> Option<Vec<A::Tree>> {
    let start = *at;
    let mut depth = 0usize;
    let mut arrow = false;
    while let Some(tree) = trees.get(*at) {
        *at += 1;
        let mut dash = false;
        if let View::Punct(c, joint) = A::view(tree) {
            match c {
                ',' if depth == 0 => return Some(trees[start..*at - 1].to_vec()),
                '<' => depth += 1,
                // The `>` of `->` (in `fn(A) -> B`) closes nothing.
                '>' if !arrow => depth = depth.checked_sub(1)?,
                '=' | ';' => return None,
                _ => {}
            }
            dash = c == '-' && joint;
        }
        arrow = dash;
    }
    Some(trees[start..].to_vec())
}

/// Whether `tokens` are exactly one type written as a path: `a::B<C, d::E<F>>` (names, `::`,
/// and generic arguments that are such types). Copying them then writes what syn writes when
/// it parses and prints the type, up to the spacing of `<`, `>` and `,`, which does not change
/// how a type parses.
pub(crate) fn plain_type<A: Api>(tokens: &[A::Tree]) -> bool {
    let views: Vec<View<A>> = tokens.iter().map(A::view).collect();
    path_type(&views, 0) == Some(views.len())
}

/// The position after the path type starting at `at`, if one does.
fn path_type<A: Api>(views: &[View<A>], mut at: usize) -> Option<usize> {
    let colons = |at: usize| {
        matches!(
            (views.get(at), views.get(at + 1)),
            (Some(View::Punct(':', true)), Some(View::Punct(':', _)))
        )
    };
    let punct = |at: usize, c: char| matches!(views.get(at), Some(View::Punct(p, _)) if *p == c);
    if colons(at) {
        at += 2;
    }
    loop {
        match views.get(at)? {
            View::Ident(_) => at += 1,
            _ => return None,
        }
        if punct(at, '<') {
            at += 1;
            loop {
                at = path_type(views, at)?;
                // Arguments are separated by commas: `A<B C>` is no type.
                if punct(at, ',') {
                    at += 1;
                } else if !punct(at, '>') {
                    return None;
                }
                if punct(at, '>') {
                    at += 1;
                    break;
                }
            }
        }
        if !colons(at) {
            return Some(at);
        }
        at += 2;
    }
}

/// The names of `A, B, C` (a trailing comma allowed), each as its tree and text; `None` for
/// anything else.
pub(crate) fn idents<A: Api>(trees: &[A::Tree]) -> Option<Vec<(A::Tree, String)>> {
    let mut out = Vec::new();
    let mut iter = trees.iter();
    loop {
        match iter.next() {
            None => return Some(out),
            Some(tree) => match A::view(tree) {
                View::Ident(name) => out.push((tree.clone(), name)),
                _ => return None,
            },
        }
        match iter.next() {
            None => return Some(out),
            Some(tree) if is_punct::<A>(tree, ',') => {}
            Some(_) => return None,
        }
    }
}

/// The span syn gives a run of tokens: the first token's, joined to the last's where the
/// compiler can.
pub(crate) fn joined_span<A: Api>(tokens: &[A::Tree]) -> A::Span {
    match tokens {
        [] => A::call_site(),
        [only] => A::span(only),
        [first, .., last] => {
            A::join(A::span(first), A::span(last)).unwrap_or_else(|| A::span(first))
        }
    }
}

/// Per `#[slot(..)]` field: the slot, its name, the field and the field's type.
type SlotField<'a, A> = (<A as Api>::Tree, String, &'a <A as Api>::Tree, &'a [<A as Api>::Tree]);

/// `#[derive(Command)]`'s expansion of `input` when it is the plain form: what
/// [`crate::command::expand`] writes, or `None` for anything else, which that then handles.
pub(crate) fn command<A: Api>(input: A::Stream) -> Option<A::Stream> {
    let parsed = plain_struct::<A>(input)?;
    let (Delim::Brace, body) = parsed.body? else { return None };
    let fields = named_fields::<A>(body)?;

    let (mut state, mut error, mut continuation) = (None, None, None);
    for attr in &parsed.attrs {
        // On the struct, `#[slot(..)]`, `#[key]` and `#[fingerprint]` are mistakes the full
        // path reports.
        if named::<A>(attr, "slot") || named::<A>(attr, "key") || named::<A>(attr, "fingerprint") {
            return None;
        }
        if !named::<A>(attr, "command") {
            continue;
        }
        let trees = list::<A>(attr, "command")?;
        let mut at = 0;
        while at < trees.len() {
            let View::Ident(key) = A::view(&trees[at]) else { return None };
            if !matches!(trees.get(at + 1).map(A::view), Some(View::Punct('=', false))) {
                return None;
            }
            at += 2;
            let value = until_comma::<A>(&trees, &mut at)?;
            if !plain_type::<A>(&value) {
                return None;
            }
            let target = match key.as_str() {
                "state" => &mut state,
                "error" => &mut error,
                "continuation" => &mut continuation,
                _ => return None,
            };
            if target.replace(value).is_some() {
                return None;
            }
        }
    }
    let (state, error) = (state?, error?);

    let mut slots: Vec<SlotField<'_, A>> = Vec::new();
    let mut key = None;
    for field in &fields {
        let mut binds = false;
        for attr in &field.attrs {
            // `#[fingerprint]` fields are the full path's (as are mistakes).
            if named::<A>(attr, "command") || named::<A>(attr, "fingerprint") {
                return None;
            }
            if named::<A>(attr, "slot") {
                let mut listed = idents::<A>(&list::<A>(attr, "slot")?)?;
                let (Some((slot, name)), None) = (listed.pop(), listed.pop()) else { return None };
                // A slot bound twice, or a field binding two, is a mistake.
                if binds || slots.iter().any(|s| s.1 == name) || !plain_type::<A>(&field.ty) {
                    return None;
                }
                binds = true;
                slots.push((slot, name, &field.ident, &field.ty));
            } else if named::<A>(attr, "key") {
                if attr.len() != 1 || key.is_some() || !plain_type::<A>(&field.ty) {
                    return None;
                }
                key = Some((&field.ident, &field.ty[..]));
            }
        }
    }
    if slots.len() > crate::command::FLAT_BINDINGS {
        return None;
    }

    let call_site = A::call_site();
    let mut out = Out::<A>::new(call_site);
    out.ident("impl").path("::eventcore::Command").ident("for").tree(&parsed.ident);
    out.group(Delim::Brace, |o| {
        o.ident("type").ident("Streams").punct("=");
        if slots.is_empty() {
            o.path("::eventcore::command::HNil");
        } else {
            o.path("::eventcore::__derive").punct("::").ident(&format!("Set{}", slots.len()));
            o.punct("<");
            for (i, (slot, ..)) in slots.iter().enumerate() {
                if i > 0 {
                    o.punct(",");
                }
                o.tree(slot);
            }
            o.punct(">");
        }
        o.punct(";");
        o.ident("type").ident("State").punct("=").tokens(&state).punct(";");
        o.ident("type").ident("Error").punct("=").tokens(&error).punct(";");
        o.ident("type").ident("Continuation").punct("=");
        match &continuation {
            Some(c) => o.tokens(c),
            None => o.path("::eventcore::NoDiscovery"),
        };
        o.punct(";");

        o.ident("fn").ident("streams").group(Delim::Parenthesis, |o| {
            o.punct("&").ident("self");
        });
        o.punct("->").path("::eventcore::Bindings").punct("<").path("Self::Streams").punct(">");
        o.group(Delim::Brace, |o| {
            if slots.is_empty() {
                o.path("::eventcore::command::HNil");
                return;
            }
            o.path("::core::convert::From::from").group(Delim::Parenthesis, |o| {
                o.group(Delim::Parenthesis, |o| {
                    for (slot, _, field, ty) in &slots {
                        // Spanned at the field's type (the field's name keeps its own
                        // span): a field of the wrong key type is reported at the field.
                        // `bind::<Slot, State>` compiles only when the state folds the
                        // slot, reported at the slot's name (its own span).
                        // `self` read through `this`, as the full path does.
                        o.at(joined_span::<A>(ty));
                        o.group(Delim::Brace, |o| {
                            let here = o.span;
                            o.ident("let").ident("this").punct("=");
                            o.at(call_site).ident("self").at(here).punct(";");
                            o.path("::eventcore::__derive::bind").punct("::").punct("<").tree(slot);
                            o.punct(",").tokens(&state).punct(">");
                            o.group(Delim::Parenthesis, |o| {
                                o.punct("&").ident("this").punct(".").tree(field);
                            });
                        });
                        o.at(call_site).punct(",");
                    }
                });
            });
        });

        if let Some((field, ty)) = key {
            o.ident("fn").ident("idempotency_key").group(Delim::Parenthesis, |o| {
                o.punct("&").ident("self");
            });
            o.punct("->").path("::core::option::Option").punct("<");
            o.path("::eventcore::IdempotencyKey").punct(">");
            o.group(Delim::Brace, |o| {
                let here = joined_span::<A>(ty);
                o.at(here).ident("let").ident("this").punct("=");
                o.at(call_site).ident("self").at(here).punct(";");
                o.path("::eventcore::__derive::KeyField::idempotency_key");
                o.group(Delim::Parenthesis, |o| {
                    o.punct("&").ident("this").punct(".").tree(field);
                });
            });
        }
    });
    Some(out.finish())
}

/// `#[derive(Fold)]`'s expansion of `input` when the state itself folds every slot (only
/// `#[fold(A, B)]` on the type, slots written as names, no generics): what
/// [`crate::fold::expand`] writes, a marker impl per slot. `None` for anything else (a field
/// fold, a mistake), which that then handles.
pub(crate) fn fold<A: Api>(input: A::Stream) -> Option<A::Stream> {
    let parsed = plain_struct::<A>(input)?;
    let mut slots: Vec<(A::Tree, String)> = Vec::new();
    for attr in &parsed.attrs {
        if !named::<A>(attr, "fold") {
            continue;
        }
        let listed = idents::<A>(&list::<A>(attr, "fold")?)?;
        if listed.is_empty() {
            return None;
        }
        for (slot, name) in listed {
            if name == "by_stream" || slots.iter().any(|s| s.1 == name) {
                return None;
            }
            slots.push((slot, name));
        }
    }
    if slots.is_empty() {
        return None;
    }
    // A field that folds a slot takes the full path.
    if let Some((_, body)) = parsed.body {
        let trees: Vec<A::Tree> = body.into_iter().collect();
        for pair in trees.windows(2) {
            if is_punct::<A>(&pair[0], '#') {
                match A::view(&pair[1]) {
                    View::Group(Delim::Bracket, attr) => {
                        let attr: Vec<A::Tree> = attr.into_iter().collect();
                        if named::<A>(&attr, "fold") || hides_a_fragment::<A>(&attr) {
                            return None;
                        }
                    }
                    _ => return None,
                }
            }
        }
    }

    let mut out = Out::<A>::new(A::call_site());
    for (slot, _) in &slots {
        // Spanned at the slot, the state's name too: a state without the slot's `Apply` is
        // reported there.
        out.at(A::span(slot)).ident("impl").path("::eventcore::__derive::FoldsWhole").punct("<");
        out.tree(slot).punct(">").ident("for").ident(&parsed.name);
        out.group(Delim::Brace, |_| {});
    }
    Some(out.finish())
}
