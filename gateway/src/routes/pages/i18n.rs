//! The pages' strings in their five languages (seed 003: `lang=en|es|ko|zh|ja`). The widget
//! shell's five strings are the ones `/v1/chat-token?lang=` answers
//! ([`switchboard_kit::chat_ui`]); the rest are the pages' own.

use serde::Serialize;

/// Languages the pages speak, English first (the fallback).
pub const LANGUAGES: [&str; 5] = ["en", "es", "ko", "zh", "ja"];

/// Every string of the pages in one language. Serialized (camelCase) into the page for its
/// script, which reads them from `data-strings` on `<body>`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Strings {
    // The chat page.
    /// Skip link to the message box.
    pub skip_to_input: &'static str,
    /// The conversation list's heading and toggle.
    pub conversations: &'static str,
    /// Starts a new conversation.
    pub new_conversation: &'static str,
    /// A conversation without a title yet.
    pub untitled: &'static str,
    /// The conversation list is empty.
    pub no_conversations: &'static str,
    /// Loads the next page of a list.
    pub load_more: &'static str,
    /// Label of the message list.
    pub messages: &'static str,
    /// Shown in a conversation with no messages yet.
    pub empty: &'static str,
    /// Label of the message box.
    pub message_label: &'static str,
    /// Placeholder of the message box.
    pub placeholder: &'static str,
    /// The send button.
    pub send: &'static str,
    /// The stop button, while an answer streams.
    pub stop: &'static str,
    /// How to send with the keyboard.
    pub keyboard_hint: &'static str,
    /// Who wrote a message: the user.
    pub you: &'static str,
    /// Who wrote a message: the model.
    pub assistant: &'static str,
    /// An answer being written.
    pub answering: &'static str,
    /// An answer that stopped before its end (stopped, or the connection broke).
    pub partial: &'static str,
    /// An answer that failed.
    pub failed: &'static str,
    /// Sends the same message again.
    pub retry: &'static str,
    /// The network or the server failed.
    pub network_error: &'static str,
    /// Too many requests; try again shortly.
    pub rate_limited: &'static str,
    /// The session's token was refused mid-way (it expired).
    pub session_expired: &'static str,
    // The history page.
    /// The history page's title.
    pub history_title: &'static str,
    /// Label of the API key field.
    pub api_key: &'static str,
    /// Opens the history with the key.
    pub use_key: &'static str,
    /// Forgets the key in this tab.
    pub forget_key: &'static str,
    /// The key was refused.
    pub key_refused: &'static str,
    /// Label of the tenant filter.
    pub system_id: &'static str,
    /// Label of the user filter.
    pub user_id: &'static str,
    /// Label of the start of the date range.
    pub from_date: &'static str,
    /// Label of the end of the date range.
    pub to_date: &'static str,
    /// Runs the search.
    pub search: &'static str,
    /// Nothing matched.
    pub no_results: &'static str,
    /// Column: the conversation's title.
    pub title_column: &'static str,
    /// Column: how many messages.
    pub message_count: &'static str,
    /// Column: last activity.
    pub updated: &'static str,
    /// Prompt to pick a conversation from the list.
    pub select_conversation: &'static str,
    // The error page.
    /// Heading of the error page.
    pub error_title: &'static str,
    /// The chat link has no token.
    pub token_missing: &'static str,
    /// The chat link's token was refused (wrong, expired or revoked).
    pub token_refused: &'static str,
    /// What to do about a refused or missing token.
    pub token_hint: &'static str,
    /// The history link's key was refused.
    pub key_refused_page: &'static str,
    /// The service is unavailable right now.
    pub unavailable: &'static str,
}

/// The strings of one language, with the widget shell's.
#[derive(Debug, Serialize)]
pub struct Catalog {
    /// `en`, `es`, `ko`, `zh` or `ja`.
    pub lang: &'static str,
    /// Window title (shell).
    pub title: &'static str,
    /// The close button (shell).
    pub close: &'static str,
    /// The launcher button (shell).
    pub open: &'static str,
    /// Shown when the token is refused (shell).
    #[serde(rename = "tokenError")]
    pub token_error: &'static str,
    /// Shown while loading (shell).
    pub loading: &'static str,
    /// The pages' own strings.
    #[serde(flatten)]
    pub page: &'static Strings,
}

/// The catalog of `lang`; English when the pages do not speak it.
pub fn catalog(lang: &str) -> Catalog {
    let lang = LANGUAGES.into_iter().find(|l| *l == lang).unwrap_or("en");
    let page = match lang {
        "es" => &ES,
        "ko" => &KO,
        "zh" => &ZH,
        "ja" => &JA,
        _ => &EN,
    };
    let [title, close, open, token_error, loading] =
        switchboard_kit::chat_ui::strings(lang).or_else(|| switchboard_kit::chat_ui::strings("en")).unwrap_or_default();
    Catalog { lang, title, close, open, token_error, loading, page }
}

/// The language of a page: `lang` when the pages speak it, else the first of the browser's
/// languages (`Accept-Language`, by preference) that they speak, else English.
pub fn negotiate(lang: Option<&str>, accept_language: Option<&str>) -> &'static str {
    let spoken = |tag: &str| {
        let primary = tag.split(['-', '_']).next().unwrap_or_default().trim().to_ascii_lowercase();
        LANGUAGES.into_iter().find(|l| *l == primary)
    };
    if let Some(lang) = lang.and_then(spoken) {
        return lang;
    }
    let mut ranked: Vec<(f32, usize, &str)> = accept_language
        .unwrap_or_default()
        .split(',')
        .enumerate()
        .filter_map(|(i, item)| {
            let mut parts = item.split(';');
            let tag = parts.next()?.trim();
            let q =
                parts.find_map(|p| p.trim().strip_prefix("q=")).map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            (q > 0.0).then_some((q, i, tag))
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().find_map(|(_, _, tag)| spoken(tag)).unwrap_or("en")
}

static EN: Strings = Strings {
    skip_to_input: "Skip to the message box",
    conversations: "Conversations",
    new_conversation: "New conversation",
    untitled: "New conversation",
    no_conversations: "No conversations yet. Write a message to start one.",
    load_more: "Load more",
    messages: "Messages",
    empty: "Ask anything to start the conversation.",
    message_label: "Your message",
    placeholder: "Write a message…",
    send: "Send",
    stop: "Stop",
    keyboard_hint: "Enter sends, Shift+Enter starts a new line.",
    you: "You",
    assistant: "Assistant",
    answering: "Answering…",
    partial: "The answer stopped before it was finished.",
    failed: "The answer failed.",
    retry: "Retry",
    network_error: "The connection failed. Check your network and try again.",
    rate_limited: "Too many messages at once. Please wait a moment and try again.",
    session_expired: "This chat session has expired. Open the chat again from the site.",
    history_title: "Conversation history",
    api_key: "API key",
    use_key: "Open history",
    forget_key: "Forget key",
    key_refused: "This API key was refused.",
    system_id: "System",
    user_id: "User",
    from_date: "From",
    to_date: "To",
    search: "Search",
    no_results: "No conversations match these filters.",
    title_column: "Title",
    message_count: "Messages",
    updated: "Last activity",
    select_conversation: "Choose a conversation to read it.",
    error_title: "This chat cannot open",
    token_missing: "The link to this chat is incomplete: it has no token.",
    token_refused: "The link to this chat is invalid or has expired.",
    token_hint: "Open the chat again from the site that sent you here.",
    key_refused_page: "This API key was refused. Check the key and open the history again.",
    unavailable: "The chat service is unavailable right now. Please try again in a moment.",
};

static ES: Strings = Strings {
    skip_to_input: "Ir al cuadro de mensaje",
    conversations: "Conversaciones",
    new_conversation: "Nueva conversación",
    untitled: "Nueva conversación",
    no_conversations: "Aún no hay conversaciones. Escribe un mensaje para empezar una.",
    load_more: "Cargar más",
    messages: "Mensajes",
    empty: "Pregunta lo que quieras para empezar la conversación.",
    message_label: "Tu mensaje",
    placeholder: "Escribe un mensaje…",
    send: "Enviar",
    stop: "Detener",
    keyboard_hint: "Intro envía el mensaje; Mayús+Intro añade una línea nueva.",
    you: "Tú",
    assistant: "Asistente",
    answering: "Respondiendo…",
    partial: "La respuesta se detuvo antes de terminar.",
    failed: "No se pudo generar la respuesta.",
    retry: "Reintentar",
    network_error: "No se pudo conectar. Comprueba tu conexión e inténtalo de nuevo.",
    rate_limited: "Demasiados mensajes a la vez. Espera un momento e inténtalo de nuevo.",
    session_expired: "Esta sesión de chat ha caducado. Vuelve a abrir el chat desde el sitio.",
    history_title: "Historial de conversaciones",
    api_key: "Clave de API",
    use_key: "Abrir historial",
    forget_key: "Olvidar clave",
    key_refused: "Se rechazó esta clave de API.",
    system_id: "Sistema",
    user_id: "Usuario",
    from_date: "Desde",
    to_date: "Hasta",
    search: "Buscar",
    no_results: "Ninguna conversación coincide con estos filtros.",
    title_column: "Título",
    message_count: "Mensajes",
    updated: "Última actividad",
    select_conversation: "Elige una conversación para leerla.",
    error_title: "No se puede abrir este chat",
    token_missing: "El enlace a este chat está incompleto: le falta el token.",
    token_refused: "El enlace a este chat no es válido o ha caducado.",
    token_hint: "Vuelve a abrir el chat desde el sitio que te trajo aquí.",
    key_refused_page: "Se rechazó esta clave de API. Comprueba la clave y vuelve a abrir el historial.",
    unavailable: "El servicio de chat no está disponible en este momento. Inténtalo de nuevo en unos instantes.",
};

static KO: Strings = Strings {
    skip_to_input: "메시지 입력란으로 건너뛰기",
    conversations: "대화 목록",
    new_conversation: "새 대화",
    untitled: "새 대화",
    no_conversations: "아직 대화가 없습니다. 메시지를 보내 대화를 시작해 보세요.",
    load_more: "더 보기",
    messages: "메시지",
    empty: "무엇이든 물어보며 대화를 시작해 보세요.",
    message_label: "메시지 입력",
    placeholder: "메시지를 입력하세요…",
    send: "보내기",
    stop: "중지",
    keyboard_hint: "Enter 키로 보내고 Shift+Enter로 줄을 바꿉니다.",
    you: "나",
    assistant: "어시스턴트",
    answering: "답변 작성 중…",
    partial: "답변이 끝나기 전에 중단되었습니다.",
    failed: "답변을 생성하지 못했습니다.",
    retry: "다시 시도",
    network_error: "연결에 실패했습니다. 네트워크를 확인한 뒤 다시 시도해 주세요.",
    rate_limited: "메시지를 너무 많이 보냈습니다. 잠시 후 다시 시도해 주세요.",
    session_expired: "채팅 세션이 만료되었습니다. 사이트에서 채팅을 다시 열어 주세요.",
    history_title: "대화 기록",
    api_key: "API 키",
    use_key: "기록 열기",
    forget_key: "키 지우기",
    key_refused: "API 키가 거부되었습니다.",
    system_id: "시스템",
    user_id: "사용자",
    from_date: "시작일",
    to_date: "종료일",
    search: "검색",
    no_results: "조건에 맞는 대화가 없습니다.",
    title_column: "제목",
    message_count: "메시지 수",
    updated: "최근 활동",
    select_conversation: "내용을 볼 대화를 선택하세요.",
    error_title: "채팅을 열 수 없습니다",
    token_missing: "채팅 링크가 완전하지 않습니다. 토큰이 없습니다.",
    token_refused: "채팅 링크가 유효하지 않거나 만료되었습니다.",
    token_hint: "이곳으로 안내한 사이트에서 채팅을 다시 열어 주세요.",
    key_refused_page: "API 키가 거부되었습니다. 키를 확인한 뒤 기록을 다시 열어 주세요.",
    unavailable: "지금은 채팅 서비스를 이용할 수 없습니다. 잠시 후 다시 시도해 주세요.",
};

static ZH: Strings = Strings {
    skip_to_input: "跳到消息输入框",
    conversations: "对话",
    new_conversation: "新对话",
    untitled: "新对话",
    no_conversations: "还没有对话。发送一条消息即可开始。",
    load_more: "加载更多",
    messages: "消息",
    empty: "输入任何问题，开始对话。",
    message_label: "你的消息",
    placeholder: "输入消息…",
    send: "发送",
    stop: "停止",
    keyboard_hint: "按 Enter 发送，按 Shift+Enter 换行。",
    you: "你",
    assistant: "助手",
    answering: "正在回答…",
    partial: "回答在完成前中断了。",
    failed: "回答生成失败。",
    retry: "重试",
    network_error: "连接失败。请检查网络后重试。",
    rate_limited: "发送的消息过多，请稍后再试。",
    session_expired: "此聊天会话已过期。请从网站重新打开聊天。",
    history_title: "对话记录",
    api_key: "API 密钥",
    use_key: "打开记录",
    forget_key: "清除密钥",
    key_refused: "此 API 密钥已被拒绝。",
    system_id: "系统",
    user_id: "用户",
    from_date: "开始日期",
    to_date: "结束日期",
    search: "搜索",
    no_results: "没有符合筛选条件的对话。",
    title_column: "标题",
    message_count: "消息数",
    updated: "最近活动",
    select_conversation: "选择一个对话以查看内容。",
    error_title: "无法打开此聊天",
    token_missing: "此聊天链接不完整：缺少令牌。",
    token_refused: "此聊天链接无效或已过期。",
    token_hint: "请从引导你来到这里的网站重新打开聊天。",
    key_refused_page: "此 API 密钥已被拒绝。请检查密钥后重新打开记录。",
    unavailable: "聊天服务暂时不可用，请稍后再试。",
};

static JA: Strings = Strings {
    skip_to_input: "メッセージ入力欄へ移動",
    conversations: "会話一覧",
    new_conversation: "新しい会話",
    untitled: "新しい会話",
    no_conversations: "まだ会話はありません。メッセージを送って会話を始めましょう。",
    load_more: "さらに読み込む",
    messages: "メッセージ",
    empty: "何でも質問して会話を始めましょう。",
    message_label: "メッセージ",
    placeholder: "メッセージを入力…",
    send: "送信",
    stop: "停止",
    keyboard_hint: "Enter キーで送信、Shift+Enter キーで改行します。",
    you: "あなた",
    assistant: "アシスタント",
    answering: "回答中…",
    partial: "回答は途中で停止しました。",
    failed: "回答を生成できませんでした。",
    retry: "再試行",
    network_error: "接続に失敗しました。ネットワークを確認して、もう一度お試しください。",
    rate_limited: "メッセージの送信が多すぎます。しばらく待ってから、もう一度お試しください。",
    session_expired: "このチャットセッションは有効期限が切れました。サイトからチャットを開き直してください。",
    history_title: "会話履歴",
    api_key: "API キー",
    use_key: "履歴を開く",
    forget_key: "キーを消去",
    key_refused: "この API キーは拒否されました。",
    system_id: "システム",
    user_id: "ユーザー",
    from_date: "開始日",
    to_date: "終了日",
    search: "検索",
    no_results: "条件に一致する会話はありません。",
    title_column: "タイトル",
    message_count: "メッセージ数",
    updated: "最終更新",
    select_conversation: "会話を選択すると内容が表示されます。",
    error_title: "このチャットを開けません",
    token_missing: "このチャットのリンクは不完全です（トークンがありません）。",
    token_refused: "このチャットのリンクは無効か、有効期限が切れています。",
    token_hint: "案内元のサイトからチャットを開き直してください。",
    key_refused_page: "この API キーは拒否されました。キーを確認して、履歴を開き直してください。",
    unavailable: "現在チャットサービスを利用できません。しばらくしてから、もう一度お試しください。",
};
