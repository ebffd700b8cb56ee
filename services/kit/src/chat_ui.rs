//! Strings of the chat widget shell, per language (seed 003: `GET /v1/chat-token?lang=`), shared by
//! the auth service's chat token and the gateway's pages.

/// Languages with UI strings.
pub const LANGUAGES: [&str; 5] = ["en", "es", "ko", "zh", "ja"];

/// `(title, close, open, tokenError, loading)` for `lang`, if supported.
pub fn strings(lang: &str) -> Option<[&'static str; 5]> {
    Some(match lang {
        "en" => ["Chat", "Close", "Open chat", "Could not start the chat. Please try again.", "Loading…"],
        "es" => ["Chat", "Cerrar", "Abrir chat", "No se pudo iniciar el chat. Inténtalo de nuevo.", "Cargando…"],
        "ko" => ["채팅", "닫기", "채팅 열기", "채팅을 시작할 수 없습니다. 다시 시도해 주세요.", "불러오는 중…"],
        "zh" => ["聊天", "关闭", "打开聊天", "无法开始聊天，请重试。", "加载中…"],
        "ja" => [
            "チャット",
            "閉じる",
            "チャットを開く",
            "チャットを開始できませんでした。もう一度お試しください。",
            "読み込み中…",
        ],
        _ => return None,
    })
}
