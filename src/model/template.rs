//! Text templates with `{name}` placeholders, as the mapping file writes keys
//! (`brands_categories_{brand_id}_{category_id}`) and notification channels
//! (`purchase_orders:{event}`). Parsing and rendering only; what a name stands
//! for is the caller's business.

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as it is.
    Literal(String),
    /// A `{name}` placeholder.
    Name(String),
}

/// Why a template cannot be read (the template's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A `}` that closes nothing.
    UnopenedBrace(String),
    /// A `{` never closed.
    UnclosedBrace(String),
    /// `{}` or `{a{b}`.
    BadPlaceholder(String),
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::UnopenedBrace(text) => write!(f, "template \"{text}\" has a \"}}\" without its \"{{\""),
            TemplateError::UnclosedBrace(text) => write!(f, "template \"{text}\" has a \"{{\" without its \"}}\""),
            TemplateError::BadPlaceholder(text) => write!(f, "template \"{text}\" has an empty or nested placeholder"),
        }
    }
}

impl std::error::Error for TemplateError {}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`. Braces only open and close placeholders: an unmatched or
    /// nested brace, or an empty name, is an error naming the template.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let open = rest.find(['{', '}']).unwrap_or(rest.len());
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            rest = &rest[open..];
            let Some(inner) = rest.strip_prefix('{') else {
                if rest.starts_with('}') {
                    return Err(TemplateError::UnopenedBrace(text.to_string()));
                }
                break;
            };
            let close = inner.find('}').ok_or_else(|| TemplateError::UnclosedBrace(text.to_string()))?;
            let name = &inner[..close];
            if name.is_empty() || name.contains('{') {
                return Err(TemplateError::BadPlaceholder(text.to_string()));
            }
            parts.push(Part::Name(name.to_string()));
            rest = &inner[close + 1..];
        }
        Ok(Template { parts })
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The placeholders' names, in order.
    #[cfg(test)]
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Name(n) => Some(n.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Fills the placeholders with `value(name)`. The first name without a value
    /// is returned as the error, so the caller can say which one was missing.
    pub fn render(&self, mut value: impl FnMut(&str) -> Option<String>) -> Result<String, &str> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Name(name) => out.push_str(&value(name).ok_or(name.as_str())?),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_templates_read_as_before_they_were_kinds() {
        let why = |text: &str| Template::parse(text).unwrap_err().to_string();
        assert_eq!(why("a}"), "template \"a}\" has a \"}\" without its \"{\"");
        assert_eq!(why("a{b"), "template \"a{b\" has a \"{\" without its \"}\"");
        assert_eq!(why("a{}"), "template \"a{}\" has an empty or nested placeholder");
    }

    #[test]
    fn placeholders_and_literals_alternate() {
        let t = Template::parse("purchase_orders:{event}").unwrap();
        assert_eq!(t.parts(), [Part::Literal("purchase_orders:".into()), Part::Name("event".into())]);
        assert_eq!(t.names().collect::<Vec<_>>(), ["event"]);
        let t = Template::parse("{a}_{b}").unwrap();
        assert_eq!(t.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(Template::parse("plain").unwrap().names().count(), 0);
    }

    #[test]
    fn rendering_names_the_missing_value() {
        let t = Template::parse("o:{event}:{id}").unwrap();
        let both = |n: &str| Some(if n == "id" { "7" } else { "Opening Ceremony" }.to_string());
        assert_eq!(t.render(both).unwrap(), "o:Opening Ceremony:7");
        assert_eq!(t.render(|n| (n == "id").then(|| "7".to_string())), Err("event"));
    }

    #[test]
    fn broken_braces_are_refused() {
        for bad in ["a{b", "a}b", "{}", "{a{b}}", "x{"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
