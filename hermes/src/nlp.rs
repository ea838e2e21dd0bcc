//! Rule-based NLP: sentence and clause splitting, tokenisation, lemmatisation, named entities and
//! part-of-speech tags.
//!
//! The rules are small and deterministic, tuned for the short imperative goals that Sophia turns
//! into plan steps ("Pick up the red block, then place it on the table and report the result.").
//! Statistical pipelines (rust-bert, a spaCy port) were considered and left out: they need model
//! downloads and hundreds of megabytes for what these goals need, and their output is not
//! reproducible across model versions. All offsets are in characters (Unicode scalar values),
//! end exclusive.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::text::TextError;

/// One NLP operation a request may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Split into sentences, then into clauses; answers `sentences`.
    Sentences,
    /// Words, numbers and punctuation with offsets; answers `tokens`.
    Tokenize,
    /// The dictionary form of every word and number; answers `lemmas`.
    Lemmatize,
    /// Proper nouns and numbers; answers `entities`.
    Ner,
    /// Universal part-of-speech tags; answers `pos_tags`.
    Pos,
}

impl Operation {
    /// Every operation, in the order their answers appear.
    pub const ALL: [Operation; 5] = [
        Self::Sentences,
        Self::Tokenize,
        Self::Lemmatize,
        Self::Ner,
        Self::Pos,
    ];

    /// The name a request uses for this operation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sentences => "sentences",
            Self::Tokenize => "tokenize",
            Self::Lemmatize => "lemmatize",
            Self::Ner => "ner",
            Self::Pos => "pos",
        }
    }
}

impl FromStr for Operation {
    type Err = NlpError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|op| op.as_str().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| NlpError::UnknownOperation {
                name: name.to_owned(),
            })
    }
}

fn known_operations() -> String {
    Operation::ALL.map(Operation::as_str).join(", ")
}

/// Why a text could not be analysed. Every variant is a client error (bad input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NlpError {
    /// The text is empty, only whitespace, or too long.
    #[error(transparent)]
    Text(#[from] TextError),
    /// The request asked for no operation.
    #[error(
        "operations must not be empty; known operations: {}",
        known_operations()
    )]
    NoOperations,
    /// The request named an operation that does not exist.
    #[error("unknown operation {name:?}; known operations: {}", known_operations())]
    UnknownOperation {
        /// The name as requested.
        name: String,
    },
}

impl NlpError {
    /// A stable machine-readable code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Text(error) => error.code(),
            Self::NoOperations => "no_operations",
            Self::UnknownOperation { .. } => "unknown_operation",
        }
    }
}

/// What kind of text a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Letters and digits, with inner apostrophes and hyphens ("don't", "red-hot", "3rd").
    Word,
    /// Digits with inner `.` or `,` separators ("42", "3.5", "1,000").
    Number,
    /// Any other single non-whitespace character.
    Punctuation,
}

/// A token with its character offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Token {
    /// The token as written.
    pub text: String,
    /// What kind of token it is.
    pub kind: TokenKind,
    /// Offset of the first character.
    pub start: usize,
    /// Offset one past the last character.
    pub end: usize,
}

/// A word or number and its dictionary form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Lemma {
    /// The token as written.
    pub text: String,
    /// Its lower-cased dictionary form.
    pub lemma: String,
    /// Offset of the first character.
    pub start: usize,
    /// Offset one past the last character.
    pub end: usize,
}

/// The label of a named entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntityLabel {
    /// A run of capitalised words ("Acme Robotics", "Paris").
    ProperNoun,
    /// A number ("3", "2.5").
    Number,
}

/// A named entity with its character offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Entity {
    /// The entity as written.
    pub text: String,
    /// What kind of entity it is.
    pub label: EntityLabel,
    /// Offset of the first character.
    pub start: usize,
    /// Offset one past the last character.
    pub end: usize,
}

/// A Universal Dependencies part-of-speech tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum PosTag {
    /// Adjective.
    Adj,
    /// Adposition (preposition).
    Adp,
    /// Adverb.
    Adv,
    /// Auxiliary verb.
    Aux,
    /// Coordinating conjunction.
    Cconj,
    /// Determiner.
    Det,
    /// Noun.
    Noun,
    /// Numeral.
    Num,
    /// Particle.
    Part,
    /// Pronoun.
    Pron,
    /// Proper noun.
    Propn,
    /// Punctuation.
    Punct,
    /// Subordinating conjunction.
    Sconj,
    /// Verb.
    Verb,
}

/// A token and its part-of-speech tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TaggedToken {
    /// The token as written.
    pub text: String,
    /// Its tag.
    pub tag: PosTag,
    /// Offset of the first character.
    pub start: usize,
    /// Offset one past the last character.
    pub end: usize,
}

/// The answers to the operations a request asked for; an operation not asked for is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NlpOutput {
    /// `sentences`: every clause of every sentence, trimmed of connectives ("then", "and") and of
    /// trailing punctuation, in order. Each becomes one plan step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentences: Option<Vec<String>>,
    /// `tokenize`: every token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<Token>>,
    /// `lemmatize`: every word and number with its lemma.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lemmas: Option<Vec<Lemma>>,
    /// `ner`: proper nouns and numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entities: Option<Vec<Entity>>,
    /// `pos`: every token with its tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pos_tags: Option<Vec<TaggedToken>>,
}

/// Parses operation names, keeping the first occurrence of each.
///
/// # Errors
/// [`NlpError::NoOperations`] for an empty list, [`NlpError::UnknownOperation`] for a name that
/// is not one of [`Operation::ALL`].
pub fn parse_operations<S: AsRef<str>>(names: &[S]) -> Result<Vec<Operation>, NlpError> {
    if names.is_empty() {
        return Err(NlpError::NoOperations);
    }
    let mut operations = Vec::with_capacity(names.len());
    for name in names {
        let operation: Operation = name.as_ref().parse()?;
        if !operations.contains(&operation) {
            operations.push(operation);
        }
    }
    Ok(operations)
}

/// Runs the named operations on `text` inside a `hermes.nlp` span.
///
/// # Errors
/// [`NlpError`] for an empty operation list, an unknown operation name, an empty or
/// whitespace-only text, or a text longer than [`crate::text::MAX_TEXT_CHARS`].
pub fn analyze<S: AsRef<str>>(text: &str, operations: &[S]) -> Result<NlpOutput, NlpError> {
    let length = text.chars().count();
    let operations = parse_operations(operations);
    // The fields are known before the work starts: given when the span is created rather than
    // recorded after, as each `record` is one more pass through every layer.
    let span = tracing::info_span!(
        "hermes.nlp",
        nlp.operations = operations.as_ref().ok().map(|operations| {
            operations
                .iter()
                .map(|op| op.as_str())
                .collect::<Vec<_>>()
                .join(",")
        }),
        nlp.text_length = i64::try_from(length).unwrap_or(i64::MAX),
    );
    let _entered = span.enter();
    let operations = operations?;
    crate::text::check(text, length)?;
    Ok(Document::new(text).run(&operations))
}

/// Splits `text` into clauses, the answer of the `sentences` operation.
pub fn clauses(text: &str) -> Vec<String> {
    Document::new(text).clauses()
}

/// Splits `text` into word, number and punctuation tokens.
pub fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let kind = if c.is_numeric() {
            i = scan_number(&chars, i);
            if chars.get(i).is_some_and(|c| c.is_alphabetic()) {
                i = scan_word(&chars, i);
                TokenKind::Word
            } else {
                TokenKind::Number
            }
        } else if c.is_alphanumeric() {
            i = scan_word(&chars, i);
            TokenKind::Word
        } else {
            i += 1;
            TokenKind::Punctuation
        };
        tokens.push(Token {
            text: chars[start..i].iter().collect(),
            kind,
            start,
            end: i,
        });
    }
    tokens
}

fn scan_number(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|c| c.is_numeric()) {
        i += 1;
        let separated = matches!(chars.get(i), Some('.' | ','))
            && chars.get(i + 1).is_some_and(|c| c.is_numeric());
        if separated {
            i += 1;
        }
    }
    i
}

fn scan_word(chars: &[char], mut i: usize) -> usize {
    loop {
        while chars.get(i).is_some_and(|c| c.is_alphanumeric()) {
            i += 1;
        }
        let joined = matches!(chars.get(i), Some('\'' | '\u{2019}' | '-'))
            && chars.get(i + 1).is_some_and(|c| c.is_alphanumeric());
        if !joined {
            return i;
        }
        i += 1;
    }
}

/// Longer words are left as they are: no English word that long has a suffix worth taking off,
/// and the rules' cost grows with the length.
const MAX_STEMMED_CHARS: usize = 40;

/// The lower-cased dictionary form of one word: an irregular table first, then suffix rules
/// (plural and third-person `-s`/`-es`/`-ies`, past `-ed`, progressive `-ing`) with the usual
/// repairs (undoubling "stopped" to "stop", restoring the "e" of "placed" to "place").
///
/// Written by hand rather than with a Porter stemmer crate (rust-stemmers): a stemmer returns
/// stems ("place" -> "plac"), not words, and these lemmas are shown to users.
pub fn lemmatize_word(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some(lemma) = irregular_lemma(&lower) {
        return lemma.to_owned();
    }
    let lower = lower
        .strip_suffix("'s")
        .or_else(|| lower.strip_suffix("\u{2019}s"))
        .map_or(lower.clone(), str::to_owned);
    let length = lower.chars().count();
    if !(4..=MAX_STEMMED_CHARS).contains(&length)
        || !lower.chars().all(char::is_alphabetic)
        || KEEP_AS_IS.contains(lower.as_str())
    {
        return lower;
    }
    if let Some(stem) = lower.strip_suffix("ies").filter(|_| length > 4) {
        return format!("{stem}y");
    }
    for suffix in ["sses", "xes", "ches", "shes", "zzes"] {
        if lower.ends_with(suffix) {
            return lower[..lower.len() - 2].to_owned();
        }
    }
    if lower.ends_with('s') && !["ss", "us", "is"].iter().any(|end| lower.ends_with(end)) {
        return lower[..lower.len() - 1].to_owned();
    }
    if let Some(stem) = lower.strip_suffix("ied").filter(|_| length > 4) {
        return format!("{stem}y");
    }
    if lower.ends_with("eed") {
        return lower;
    }
    if let Some(stem) = lower.strip_suffix("ed").filter(|stem| has_vowel(stem)) {
        return repair_stem(stem);
    }
    if let Some(stem) = lower
        .strip_suffix("ing")
        .filter(|stem| has_vowel(stem) && !lower.ends_with("thing"))
    {
        return repair_stem(stem);
    }
    lower
}

fn irregular_lemma(word: &str) -> Option<&'static str> {
    IRREGULAR.get(word).copied()
}

fn is_vowel(chars: &[char], i: usize) -> bool {
    match chars[i] {
        'a' | 'e' | 'i' | 'o' | 'u' => true,
        // "y" is a vowel after a consonant ("try"), a consonant otherwise ("play", "yes"); in a
        // run of "y"s they alternate from the letter before the run (counted, not recursed: a
        // long run must not exhaust the stack).
        'y' => {
            let run = chars[..=i].iter().rev().take_while(|&&c| c == 'y').count();
            let first = i + 1 - run;
            let first_is_vowel =
                first > 0 && !matches!(chars[first - 1], 'a' | 'e' | 'i' | 'o' | 'u');
            first_is_vowel == (run % 2 == 1)
        }
        _ => false,
    }
}

fn has_vowel(word: &str) -> bool {
    let chars: Vec<char> = word.chars().collect();
    (0..chars.len()).any(|i| is_vowel(&chars, i))
}

/// Undoubles a final consonant ("stopp" -> "stop") or restores a dropped "e" ("plac" -> "place").
fn repair_stem(stem: &str) -> String {
    let chars: Vec<char> = stem.chars().collect();
    let n = chars.len();
    if n >= 2 && chars[n - 1] == chars[n - 2] && !is_vowel(&chars, n - 1) {
        if "lsz".contains(chars[n - 1]) {
            return stem.to_owned();
        }
        return chars[..n - 1].iter().collect();
    }
    if needs_final_e(&chars) {
        return format!("{stem}e");
    }
    stem.to_owned()
}

fn needs_final_e(chars: &[char]) -> bool {
    let n = chars.len();
    let Some(&last) = chars.last() else {
        return false;
    };
    if matches!(last, 'c' | 'v' | 'z')
        || chars.ends_with(&['u', 's'])
        || chars.ends_with(&['d', 'g'])
    {
        return true;
    }
    // "locat" -> "locate", but not "treat" or "boat".
    if n >= 3 && chars.ends_with(&['a', 't']) && !is_vowel(chars, n - 3) {
        return true;
    }
    // Porter's rule: a one-syllable consonant-vowel-consonant stem lost its "e" ("mak", "nam").
    let cvc = n >= 3
        && !is_vowel(chars, n - 3)
        && is_vowel(chars, n - 2)
        && !is_vowel(chars, n - 1)
        && !matches!(last, 'w' | 'x' | 'y');
    cvc && measure(chars) == 1
}

/// Porter's measure: the number of vowel-consonant sequences in the stem.
fn measure(chars: &[char]) -> usize {
    (1..chars.len())
        .filter(|&i| is_vowel(chars, i - 1) && !is_vowel(chars, i))
        .count()
}

/// Defines a word list, parsed once from whitespace-separated words.
macro_rules! word_set {
    ($(#[$doc:meta])* $name:ident = $words:literal) => {
        $(#[$doc])*
        static $name: LazyLock<HashSet<&'static str>> =
            LazyLock::new(|| $words.split_whitespace().collect());
    };
}

word_set!(
    /// Words the suffix rules would break: not plurals, not participles.
    KEEP_AS_IS = "\
    always perhaps whereas towards afterwards upwards downwards besides news series species \
    politics physics mathematics lens chaos bias atlas canvas alias hers ours yours theirs \
    during morning evening ceiling string spring wedding pudding hundred sacred naked wicked \
    kindred embed"
);

/// Irregular forms, `form:lemma`.
static IRREGULAR: LazyLock<HashMap<&'static str, &'static str>> = LazyLock::new(|| {
    "\
    am:be are:be is:be was:be were:be been:be being:be has:have had:have having:have does:do \
    did:do done:do doing:do went:go gone:go goes:go going:go made:make took:take taken:take \
    gave:give given:give got:get gotten:get saw:see seen:see ran:run came:come brought:bring \
    bought:buy thought:think found:find held:hold left:leave kept:keep told:tell said:say \
    sent:send led:lead met:meet paid:pay laid:lay sat:sit stood:stand understood:understand \
    wrote:write written:write spoke:speak spoken:speak broke:break broken:break chose:choose \
    chosen:choose drove:drive driven:drive ate:eat eaten:eat fell:fall fallen:fall felt:feel \
    knew:know known:know grew:grow grown:grow threw:throw thrown:throw flew:fly flown:fly \
    drew:draw drawn:draw began:begin begun:begin became:become built:build caught:catch \
    taught:teach fought:fight sought:seek lost:lose meant:mean slept:sleep spent:spend won:win \
    hung:hang struck:strike rode:ride rose:rise woke:wake wore:wear shook:shake hid:hide \
    shot:shoot slid:slide stuck:stick dug:dig fed:feed fled:flee agreed:agree children:child \
    men:man women:woman people:person mice:mouse geese:goose feet:foot teeth:tooth better:good \
    best:good worse:bad worst:bad created:create creating:create changed:change changing:change \
    arranged:arrange arranging:arrange focused:focus focusing:focus shelves:shelf knives:knife \
    halves:half wolves:wolf lives:life"
        .split_whitespace()
        .filter_map(|pair| pair.split_once(':'))
        .collect()
});

word_set!(
    /// Nouns that end like adjectives ("-able", "-ive").
    SUFFIX_NOUNS = "\
    table cable vegetable bible timetable constable olive native motive detective objective \
    drive hive archive knife"
);

word_set!(
    /// Imperative verbs that start a step of a goal; lemmas.
    VERBS = "\
    pick place put move go take get give bring carry lift drop push pull open close turn rotate \
    grab grasp hold release stack unstack insert remove find locate search look see check \
    inspect scan report tell say send show return wait stop start run walk navigate drive \
    follow clean wash fill pour cut make build create set reset sort count measure compute \
    calculate write read record describe explain list compare identify detect avoid approach \
    reach press slide flip align arrange assemble attach detach load unload pack unpack deliver \
    fetch collect gather store save plan simulate verify confirm ensure log notify call ask \
    answer help use try keep leave enter exit cross climb raise lower shake mix stir heat cool \
    cook serve charge print update greet summarize summarise translate analyze analyse wipe \
    hand pass throw catch hide visit come let stand sit meet"
);

word_set!(
    /// Words that join or introduce clauses and are dropped from a clause's edges.
    CONNECTIVES = "\
    and then finally first firstly next afterwards lastly secondly"
);

word_set!(
    DETERMINERS = "\
    the a an this that these those each every all some any no another both either neither my \
    your his her its our their"
);

word_set!(
    PRONOUNS = "\
    i you he she it we they me him us them myself yourself itself themselves something anything \
    everything nothing someone everyone what who which mine yours ours theirs"
);

word_set!(
    ADPOSITIONS = "\
    on in at to from into onto with without by for of off up down over under above below \
    between behind near through across around beside inside outside toward towards about out \
    against along upon within"
);

word_set!(
    AUXILIARIES = "\
    be am is are was were been being do does did have has had will would shall should can could \
    may might must"
);

word_set!(
    COORDINATORS = "\
    and or but nor yet so"
);

word_set!(
    SUBORDINATORS = "\
    if because while when although unless until since whether once before after than"
);

word_set!(
    ADVERBS = "\
    then now here there very also too again not never always carefully slowly quickly first \
    next finally afterwards soon still just only"
);

word_set!(
    ADJECTIVES = "\
    red blue green yellow black white orange purple pink brown gray grey big small large little \
    tall short heavy light new old good bad left right top bottom empty full open closed hot \
    cold clean dirty high low long wide narrow round square flat same other last nearest \
    closest dark bright soft hard safe ready"
);

word_set!(
    NUMBER_WORDS = "\
    zero one two three four five six seven eight nine ten eleven twelve hundred thousand \
    million"
);

word_set!(
    /// Abbreviations whose final period does not end a sentence.
    ABBREVIATIONS = "\
    mr mrs ms dr prof st jr sr vs approx fig inc ltd dept mt"
);

word_set!(
    /// Words after which the next word reads as a verb's object: "and report the result".
    OBJECT_STARTS = "\
    the a an it them this that these those all its their his her my our your up down out back"
);

fn is_in(set: &HashSet<&str>, word: &str) -> bool {
    set.contains(word)
}

/// The tag of a word on one of the closed-class lists (determiners, pronouns, prepositions...) or
/// on the short adjective and number lists; `None` for any other word.
fn closed_class_tag(word: &str) -> Option<PosTag> {
    let lists: [(&HashSet<&str>, PosTag); 9] = [
        (&DETERMINERS, PosTag::Det),
        (&PRONOUNS, PosTag::Pron),
        (&AUXILIARIES, PosTag::Aux),
        (&COORDINATORS, PosTag::Cconj),
        (&SUBORDINATORS, PosTag::Sconj),
        (&ADPOSITIONS, PosTag::Adp),
        (&ADVERBS, PosTag::Adv),
        (&NUMBER_WORDS, PosTag::Num),
        (&ADJECTIVES, PosTag::Adj),
    ];
    lists
        .into_iter()
        .find(|(list, _)| list.contains(word))
        .map(|(_, tag)| tag)
}

/// A text with its tokens and sentence/clause structure, computed once for all operations.
struct Document<'a> {
    text: &'a str,
    /// Byte offset of every character, plus the text length, to slice by character offsets.
    byte_offsets: Vec<usize>,
    tokens: Vec<Token>,
    /// Lower-cased token texts.
    lower: Vec<String>,
    sentences: Vec<Range<usize>>,
    /// Whether each token is the first word of its sentence.
    sentence_start: Vec<bool>,
}

impl<'a> Document<'a> {
    fn new(text: &'a str) -> Self {
        let byte_offsets = text
            .char_indices()
            .map(|(offset, _)| offset)
            .chain(std::iter::once(text.len()))
            .collect();
        let tokens = tokenize(text);
        let lower = tokens.iter().map(|t| t.text.to_lowercase()).collect();
        let mut document = Self {
            text,
            byte_offsets,
            tokens,
            lower,
            sentences: Vec::new(),
            sentence_start: Vec::new(),
        };
        document.sentences = document.sentence_ranges();
        document.sentence_start = vec![false; document.tokens.len()];
        for sentence in &document.sentences {
            if let Some(first) = document.first_word(sentence.clone()) {
                document.sentence_start[first] = true;
            }
        }
        document
    }

    fn run(&self, operations: &[Operation]) -> NlpOutput {
        let mut output = NlpOutput::default();
        for operation in operations {
            match operation {
                Operation::Sentences => output.sentences = Some(self.clauses()),
                Operation::Tokenize => output.tokens = Some(self.tokens.clone()),
                Operation::Lemmatize => output.lemmas = Some(self.lemmas()),
                Operation::Ner => output.entities = Some(self.entities()),
                Operation::Pos => output.pos_tags = Some(self.pos_tags()),
            }
        }
        output
    }

    fn slice(&self, tokens: Range<usize>) -> &'a str {
        let start = self.byte_offsets[self.tokens[tokens.start].start];
        let end = self.byte_offsets[self.tokens[tokens.end - 1].end];
        &self.text[start..end]
    }

    fn is_punct(&self, i: usize, marks: &str) -> bool {
        let token = &self.tokens[i];
        token.kind == TokenKind::Punctuation && marks.contains(token.text.as_str())
    }

    fn is_content(&self, i: usize) -> bool {
        self.tokens[i].kind != TokenKind::Punctuation && !is_in(&CONNECTIVES, &self.lower[i])
    }

    fn word(&self, i: usize) -> Option<&str> {
        self.tokens
            .get(i)
            .filter(|t| t.kind == TokenKind::Word)
            .map(|_| self.lower[i].as_str())
    }

    fn sentence_ranges(&self) -> Vec<Range<usize>> {
        let n = self.tokens.len();
        let mut ranges = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < n {
            if self.is_punct(i, ".!?\u{2026}") && !self.is_abbreviation(i) {
                // Closing marks glued to the terminator belong to the sentence: `."` or `?!`.
                let mut last = i;
                while last + 1 < n
                    && self.tokens[last + 1].start == self.tokens[last].end
                    && self.is_punct(last + 1, ".!?\u{2026}\"')]\u{201d}\u{2019}")
                {
                    last += 1;
                }
                let at_break = last + 1 == n || self.tokens[last + 1].start > self.tokens[last].end;
                if at_break {
                    ranges.push(start..last + 1);
                    start = last + 1;
                }
                i = last + 1;
            } else {
                i += 1;
            }
        }
        if start < n {
            ranges.push(start..n);
        }
        ranges
    }

    /// Whether the period at `i` closes an abbreviation ("Dr.", "e.g.") rather than a sentence.
    fn is_abbreviation(&self, i: usize) -> bool {
        if !self.is_punct(i, ".") || i == 0 {
            return false;
        }
        let previous = &self.tokens[i - 1];
        if previous.kind != TokenKind::Word || previous.end != self.tokens[i].start {
            return false;
        }
        let dotted_letters = previous.text.chars().count() == 1
            && i >= 2
            && self.is_punct(i - 2, ".")
            && self.tokens[i - 2].end == previous.start;
        dotted_letters || is_in(&ABBREVIATIONS, &self.lower[i - 1])
    }

    /// Clause token ranges of one sentence, trimmed of connectives and edge punctuation; clauses
    /// with no content words are dropped.
    fn clause_ranges(&self, sentence: Range<usize>) -> Vec<Range<usize>> {
        let mut raw = Vec::new();
        let mut start = sentence.start;
        // Content words in `start..k`, counted as we go so that long texts stay linear.
        let mut content = 0;
        for k in sentence.clone() {
            let next = self.word(k + 1).filter(|_| k + 1 < sentence.end);
            if self.is_punct(k, ";") {
                raw.push(start..k);
                start = k + 1;
                content = 0;
                continue;
            }
            if self.is_punct(k, ",") {
                let after_and = self.word(k + 2).filter(|_| k + 2 < sentence.end);
                let joins = match next {
                    Some("then") => true,
                    Some("and") => after_and == Some("then") || self.starts_verb_phrase(k + 2),
                    Some(_) => self.starts_verb_phrase(k + 1),
                    None => false,
                };
                if joins && content >= 1 {
                    raw.push(start..k);
                    start = k + 1;
                    content = 0;
                }
                continue;
            }
            let split_before = match self.word(k) {
                Some("then") => content >= 1,
                // "and" joins verb phrases only after a phrase of two words or more, so "pick
                // and place the block" stays whole.
                Some("and") => {
                    (next == Some("then") || self.starts_verb_phrase(k + 1)) && content >= 2
                }
                _ => false,
            };
            if split_before {
                raw.push(start..k);
                start = k;
                content = 0;
            }
            if self.is_content(k) {
                content += 1;
            }
        }
        raw.push(start..sentence.end);
        raw.into_iter()
            .filter_map(|range| self.trim_clause(range))
            .collect()
    }

    fn trim_clause(&self, mut range: Range<usize>) -> Option<Range<usize>> {
        if !range.clone().any(|k| self.is_content(k)) {
            return None;
        }
        while !self.is_content(range.start)
            && (self.tokens[range.start].kind != TokenKind::Punctuation
                || self.is_punct(range.start, ",;:"))
        {
            range.start += 1;
        }
        while range.end > range.start + 1 && self.is_punct(range.end - 1, ",;:.!?\u{2026}") {
            range.end -= 1;
        }
        Some(range)
    }

    /// Whether the word at `i` begins a new verb phrase: a known imperative verb, or an unknown
    /// word directly followed by a determiner or pronoun ("and stow the cup").
    fn starts_verb_phrase(&self, i: usize) -> bool {
        let Some(word) = self.word(i) else {
            return false;
        };
        if self.tokens[i].text.starts_with(char::is_uppercase) && !self.sentence_start[i] {
            return false;
        }
        if is_in(&VERBS, &lemmatize_word(word)) {
            return true;
        }
        closed_class_tag(word).is_none()
            && !is_in(&ADJECTIVES, word)
            && self.word(i + 1).is_some_and(|w| is_in(&OBJECT_STARTS, w))
    }

    fn first_word(&self, range: Range<usize>) -> Option<usize> {
        range
            .into_iter()
            .find(|&k| self.tokens[k].kind != TokenKind::Punctuation)
    }

    fn clauses(&self) -> Vec<String> {
        self.sentences
            .iter()
            .flat_map(|sentence| self.clause_ranges(sentence.clone()))
            .map(|clause| self.slice(clause).to_owned())
            .collect()
    }

    fn lemmas(&self) -> Vec<Lemma> {
        self.tokens
            .iter()
            .filter(|t| t.kind != TokenKind::Punctuation)
            .map(|t| Lemma {
                text: t.text.clone(),
                lemma: match t.kind {
                    TokenKind::Word => lemmatize_word(&t.text),
                    _ => t.text.clone(),
                },
                start: t.start,
                end: t.end,
            })
            .collect()
    }

    fn is_capitalised(&self, i: usize) -> bool {
        let token = &self.tokens[i];
        token.kind == TokenKind::Word && token.text.starts_with(char::is_uppercase)
    }

    fn entities(&self) -> Vec<Entity> {
        let mut entities = Vec::new();
        for sentence in &self.sentences {
            let first = self.first_word(sentence.clone());
            let mut k = sentence.start;
            while k < sentence.end {
                if self.tokens[k].kind == TokenKind::Number {
                    entities.push(self.entity(k..k + 1, EntityLabel::Number));
                    k += 1;
                    continue;
                }
                if !self.is_capitalised(k) {
                    k += 1;
                    continue;
                }
                let end = self.name_end(k, sentence.end);
                let mut run = k..end;
                // A sentence's first word is capitalised anyway: it counts only as part of a
                // longer run ("New York"), and never when it is a common word ("The", "Pick").
                if Some(k) == first {
                    let lower = self.lower[k].as_str();
                    let common = is_in(&VERBS, &lemmatize_word(lower))
                        || is_in(&CONNECTIVES, lower)
                        || closed_class_tag(lower)
                            .is_some_and(|tag| !matches!(tag, PosTag::Adj | PosTag::Num));
                    if common {
                        run.start += 1;
                    } else if run.len() == 1 {
                        run.start = run.end;
                    }
                }
                let pronoun_i = run.len() == 1 && self.tokens[run.start].text == "I";
                if !run.is_empty() && !pronoun_i {
                    entities.push(self.entity(run, EntityLabel::ProperNoun));
                }
                k = end;
            }
        }
        entities
    }

    /// End of the run of capitalised words starting at `k`, carried over the periods of short
    /// abbreviations and initials ("Dr. Who", "U.S.").
    fn name_end(&self, k: usize, limit: usize) -> usize {
        let glued_period = |i: usize| {
            i < limit
                && self.is_punct(i, ".")
                && self.tokens[i].start == self.tokens[i - 1].end
                && self.tokens[i - 1].text.chars().count() <= 3
        };
        let mut end = k + 1;
        loop {
            if end < limit && self.is_capitalised(end) {
                end += 1;
            } else if glued_period(end) && end + 1 < limit && self.is_capitalised(end + 1) {
                end += 2;
            } else {
                break;
            }
        }
        let dotted = end - k >= 3 && self.is_punct(end - 2, ".");
        if dotted && glued_period(end) && self.tokens[end - 1].text.chars().count() == 1 {
            end += 1;
        }
        end
    }

    fn entity(&self, run: Range<usize>, label: EntityLabel) -> Entity {
        Entity {
            text: self.slice(run.clone()).to_owned(),
            label,
            start: self.tokens[run.start].start,
            end: self.tokens[run.end - 1].end,
        }
    }

    fn pos_tags(&self) -> Vec<TaggedToken> {
        let mut clause_start = vec![false; self.tokens.len()];
        for sentence in &self.sentences {
            for clause in self.clause_ranges(sentence.clone()) {
                clause_start[clause.start] = true;
            }
        }
        let mut tags: Vec<PosTag> = Vec::with_capacity(self.tokens.len());
        for (i, starts_clause) in clause_start.into_iter().enumerate() {
            let tag = self.tag(i, tags.last().copied(), starts_clause);
            tags.push(tag);
        }
        self.tokens
            .iter()
            .zip(tags)
            .map(|(t, tag)| TaggedToken {
                text: t.text.clone(),
                tag,
                start: t.start,
                end: t.end,
            })
            .collect()
    }

    fn tag(&self, i: usize, previous: Option<PosTag>, clause_start: bool) -> PosTag {
        let token = &self.tokens[i];
        match token.kind {
            TokenKind::Punctuation => return PosTag::Punct,
            TokenKind::Number => return PosTag::Num,
            TokenKind::Word => {}
        }
        let word = self.lower[i].as_str();
        let lemma = lemmatize_word(word);
        let next_is_object = self.word(i + 1).is_some_and(|w| is_in(&OBJECT_STARTS, w));
        if word == "to" {
            let verb_follows = self
                .word(i + 1)
                .is_some_and(|w| is_in(&VERBS, &lemmatize_word(w)));
            return if verb_follows {
                PosTag::Part
            } else {
                PosTag::Adp
            };
        }
        if clause_start
            && (is_in(&VERBS, &lemma) || (next_is_object && closed_class_tag(word).is_none()))
        {
            return PosTag::Verb;
        }
        if token.text.starts_with(char::is_uppercase) && !self.sentence_start[i] && word != "i" {
            return PosTag::Propn;
        }
        if let Some(tag) = closed_class_tag(word) {
            return tag;
        }
        let after_modifier = matches!(previous, Some(PosTag::Det | PosTag::Adj | PosTag::Num));
        let after_subject = matches!(previous, Some(PosTag::Pron | PosTag::Aux | PosTag::Part));
        if is_in(&VERBS, &lemma) && !after_modifier {
            return PosTag::Verb;
        }
        if word.ends_with("ly") && word.len() > 3 {
            return PosTag::Adv;
        }
        if (word.ends_with("ed") || word.ends_with("ing") || after_subject)
            && !after_modifier
            && lemma != word
        {
            return PosTag::Verb;
        }
        if !is_in(&SUFFIX_NOUNS, word)
            && ["ous", "ful", "ive", "able", "ible", "less", "ical"]
                .iter()
                .any(|s| word.ends_with(s))
        {
            return PosTag::Adj;
        }
        PosTag::Noun
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn y_is_a_vowel_after_a_consonant_also_in_a_long_run() {
        // The definition, recursively, for the short words it can afford.
        fn by_definition(chars: &[char], i: usize) -> bool {
            match chars[i] {
                'a' | 'e' | 'i' | 'o' | 'u' => true,
                'y' => i > 0 && !by_definition(chars, i - 1),
                _ => false,
            }
        }
        for word in [
            "yyyyy", "ayyyy", "byyyy", "played", "trying", "yes", "syzygy", "eye",
        ] {
            let chars: Vec<char> = word.chars().collect();
            for i in 0..chars.len() {
                assert_eq!(
                    is_vowel(&chars, i),
                    by_definition(&chars, i),
                    "{word} at {i}"
                );
            }
        }
        // A run as long as a request may hold: neither the stack nor the time it takes grows
        // with it (the rules are not applied to words this long).
        let long = format!("{}ed", "y".repeat(200_000));
        assert_eq!(lemmatize_word(&long), long);
        let chars: Vec<char> = long.chars().collect();
        assert!(is_vowel(&chars, 199_999) && !is_vowel(&chars, 199_998));
    }
    use crate::text::MAX_TEXT_CHARS;

    const GOAL: &str = "Pick up the red block, then place it on the table and report the result.";

    #[test]
    fn the_goal_splits_into_three_clauses() {
        assert_eq!(
            clauses(GOAL),
            [
                "Pick up the red block",
                "place it on the table",
                "report the result"
            ]
        );
    }

    #[test]
    fn sentences_and_clause_connectives_split() {
        let cases: &[(&str, &[&str])] = &[
            (
                "Open the door. Walk in! Is it dark?",
                &["Open the door", "Walk in", "Is it dark"],
            ),
            (
                "Grab the cup; fill it with water",
                &["Grab the cup", "fill it with water"],
            ),
            (
                "Move to the kitchen and then wait, and then report back.",
                &["Move to the kitchen", "wait", "report back"],
            ),
            (
                "First, scan the room. Then pick up the box.",
                &["scan the room", "pick up the box"],
            ),
            (
                "Pick up the red and blue blocks",
                &["Pick up the red and blue blocks"],
            ),
            (
                "Stack the boxes, the cups and the plates.",
                &["Stack the boxes, the cups and the plates"],
            ),
            (
                "Find Dr. Smith and greet him",
                &["Find Dr. Smith", "greet him"],
            ),
            (
                "It costs 3.50 dollars. Pay it",
                &["It costs 3.50 dollars", "Pay it"],
            ),
            (
                "Open the lid, wipe the tray, and close it",
                &["Open the lid", "wipe the tray", "close it"],
            ),
            (
                "Take the cup and stow the lid",
                &["Take the cup", "stow the lid"],
            ),
            ("Pick and place the block", &["Pick and place the block"]),
            ("  ... ; ,  ", &[]),
        ];
        for (text, expected) in cases {
            assert_eq!(clauses(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn pos_tags_questions_and_statements() {
        let output = analyze("Is it dark? She quickly opened the box.", &["pos"]).expect("analyze");
        let tags: Vec<PosTag> = output
            .pos_tags
            .expect("pos")
            .into_iter()
            .map(|t| t.tag)
            .collect();
        use PosTag::*;
        assert_eq!(
            tags,
            [Aux, Pron, Adj, Punct, Pron, Adv, Verb, Det, Noun, Punct]
        );
    }

    #[test]
    fn tokens_have_kinds_and_character_offsets() {
        let tokens = tokenize("Née's 3.5kg, 1,000 don't!");
        let summary: Vec<(&str, TokenKind, usize, usize)> = tokens
            .iter()
            .map(|t| (t.text.as_str(), t.kind, t.start, t.end))
            .collect();
        assert_eq!(
            summary,
            [
                ("Née's", TokenKind::Word, 0, 5),
                ("3.5kg", TokenKind::Word, 6, 11),
                (",", TokenKind::Punctuation, 11, 12),
                ("1,000", TokenKind::Number, 13, 18),
                ("don't", TokenKind::Word, 19, 24),
                ("!", TokenKind::Punctuation, 24, 25),
            ]
        );
    }

    #[test]
    fn lemmas_follow_rules_and_the_irregular_table() {
        let cases = [
            ("went", "go"),
            ("picked", "pick"),
            ("places", "place"),
            ("placed", "place"),
            ("placing", "place"),
            ("running", "run"),
            ("stopped", "stop"),
            ("boxes", "box"),
            ("blocks", "block"),
            ("carries", "carry"),
            ("carried", "carry"),
            ("moving", "move"),
            ("making", "make"),
            ("located", "locate"),
            ("reported", "report"),
            ("opened", "open"),
            ("using", "use"),
            ("filled", "fill"),
            ("matches", "match"),
            ("children", "child"),
            ("Was", "be"),
            ("glass", "glass"),
            ("status", "status"),
            ("always", "always"),
            ("thing", "thing"),
            ("something", "something"),
            ("bring", "bring"),
            ("need", "need"),
            ("robot's", "robot"),
            ("the", "the"),
        ];
        for (word, lemma) in cases {
            assert_eq!(lemmatize_word(word), lemma, "{word}");
        }
    }

    #[test]
    fn lemmatize_reports_every_word_and_number() {
        let output = analyze("She went home with 2 boxes.", &["lemmatize"]).expect("analyze");
        let lemmas: Vec<(&str, &str, usize)> = output
            .lemmas
            .as_deref()
            .expect("lemmas")
            .iter()
            .map(|l| (l.text.as_str(), l.lemma.as_str(), l.start))
            .collect();
        assert_eq!(
            lemmas,
            [
                ("She", "she", 0),
                ("went", "go", 4),
                ("home", "home", 9),
                ("with", "with", 14),
                ("2", "2", 19),
                ("boxes", "box", 21)
            ]
        );
    }

    fn entities(text: &str) -> Vec<(String, EntityLabel, usize, usize)> {
        analyze(text, &["ner"])
            .expect("analyze")
            .entities
            .expect("entities")
            .into_iter()
            .map(|e| (e.text, e.label, e.start, e.end))
            .collect()
    }

    #[test]
    fn entities_are_capitalised_runs_and_numbers() {
        use EntityLabel::{Number, ProperNoun};
        assert_eq!(
            entities("Bring 3 cups to Ada Lovelace in the Main Hall."),
            [
                ("3".to_owned(), Number, 6, 7),
                ("Ada Lovelace".to_owned(), ProperNoun, 16, 28),
                ("Main Hall".to_owned(), ProperNoun, 36, 45),
            ]
        );
        assert_eq!(
            entities("New York is big. Paris is old. The Louvre has 2.5 km of halls."),
            [
                ("New York".to_owned(), ProperNoun, 0, 8),
                ("Louvre".to_owned(), ProperNoun, 35, 41),
                ("2.5".to_owned(), Number, 46, 49),
            ]
        );
        assert!(entities("Pick up the block and then I report.").is_empty());
        assert_eq!(
            entities("Meet Dr. Who in the U.S. today. Stack block A. Then block B."),
            [
                ("Dr. Who".to_owned(), ProperNoun, 5, 12),
                ("U.S.".to_owned(), ProperNoun, 20, 24),
                ("A".to_owned(), ProperNoun, 44, 45),
                ("B".to_owned(), ProperNoun, 58, 59),
            ]
        );
    }

    #[test]
    fn entity_offsets_count_characters_not_bytes() {
        let text = "Café near Zoë Ström";
        let found = entities(text);
        assert_eq!(
            found,
            [("Zoë Ström".to_owned(), EntityLabel::ProperNoun, 10, 19)]
        );
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(chars[10..19].iter().collect::<String>(), "Zoë Ström");
    }

    #[test]
    fn pos_tags_mark_imperative_verbs() {
        let output = analyze(GOAL, &["pos"]).expect("analyze");
        let tags: Vec<(&str, PosTag)> = output
            .pos_tags
            .as_deref()
            .expect("pos")
            .iter()
            .map(|t| (t.text.as_str(), t.tag))
            .collect();
        use PosTag::*;
        assert_eq!(
            tags,
            [
                ("Pick", Verb),
                ("up", Adp),
                ("the", Det),
                ("red", Adj),
                ("block", Noun),
                (",", Punct),
                ("then", Adv),
                ("place", Verb),
                ("it", Pron),
                ("on", Adp),
                ("the", Det),
                ("table", Noun),
                ("and", Cconj),
                ("report", Verb),
                ("the", Det),
                ("result", Noun),
                (".", Punct),
            ]
        );
    }

    #[test]
    fn only_requested_operations_are_answered() {
        let output = analyze(GOAL, &["sentences", "tokenize", "sentences"]).expect("analyze");
        assert_eq!(output.sentences.as_ref().map(Vec::len), Some(3));
        assert!(output.tokens.is_some());
        assert!(output.lemmas.is_none() && output.entities.is_none() && output.pos_tags.is_none());
        let json = serde_json::to_value(&output).expect("serialise");
        let keys: Vec<&String> = json.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["sentences", "tokens"]);
        assert_eq!(
            json["tokens"][0],
            serde_json::json!({"text": "Pick", "kind": "word", "start": 0, "end": 4})
        );
    }

    #[test]
    fn bad_requests_are_rejected() {
        let err = analyze(GOAL, &["sentences", "parse"]).expect_err("unknown operation");
        assert_eq!(
            err,
            NlpError::UnknownOperation {
                name: "parse".into()
            }
        );
        assert!(
            err.to_string()
                .contains("sentences, tokenize, lemmatize, ner, pos"),
            "{err}"
        );
        let none: &[&str] = &[];
        assert_eq!(analyze(GOAL, none), Err(NlpError::NoOperations));
        assert_eq!(analyze("  \n", &["ner"]), Err(TextError::Empty.into()));
        let long = "a ".repeat(MAX_TEXT_CHARS);
        assert_eq!(
            analyze(&long, &["ner"]).map_err(|e| e.code()),
            Err("text_too_long")
        );
    }

    #[test]
    fn the_longest_text_runs_every_operation() {
        let text = "Pick up Box 7 and then place it, then go. ".repeat(MAX_TEXT_CHARS / 42);
        let all: Vec<&str> = Operation::ALL.iter().map(|op| op.as_str()).collect();
        let output = analyze(&text, &all).expect("analyze");
        let sentences = output.sentences.expect("sentences");
        assert_eq!(sentences.len(), 3 * (MAX_TEXT_CHARS / 42));
        assert_eq!(sentences[..3], ["Pick up Box 7", "place it", "go"]);
    }

    #[test]
    fn operations_deserialise_from_their_names() {
        let ops: Vec<Operation> =
            serde_json::from_str(r#"["sentences","ner","pos"]"#).expect("known");
        assert_eq!(ops, [Operation::Sentences, Operation::Ner, Operation::Pos]);
        assert!(serde_json::from_str::<Vec<Operation>>(r#"["parse"]"#).is_err());
        assert_eq!("NER".parse::<Operation>(), Ok(Operation::Ner));
    }
}
