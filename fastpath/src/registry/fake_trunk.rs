//! An in-process double of the SIP trunk, for unit tests of the registry and the API.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::verify::{Channel, Failure};

/// Records messages; answers calls with scripted outcomes.
#[derive(Default, Clone)]
pub(crate) struct FakeTrunk {
    pub messages: Arc<Mutex<Vec<(String, String)>>>,
    pub message_result: Arc<Mutex<Option<Failure>>>,
    pub calls: Arc<Mutex<VecDeque<Result<String, Failure>>>>,
}

impl FakeTrunk {
    pub fn last_code(&self) -> String {
        let messages = self.messages.lock().unwrap();
        let text = &messages.last().expect("no message sent").1;
        text.chars().filter(char::is_ascii_digit).collect()
    }
}

impl Channel for FakeTrunk {
    async fn send_message(&self, number: &str, text: &str) -> Result<(), Failure> {
        if let Some(f) = self.message_result.lock().unwrap().clone() {
            return Err(f);
        }
        self.messages
            .lock()
            .unwrap()
            .push((number.to_owned(), text.to_owned()));
        Ok(())
    }

    async fn collect_dtmf(
        &self,
        _number: &str,
        _digits: usize,
        _timeout: Duration,
    ) -> Result<String, Failure> {
        self.calls
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Err(Failure::NoAnswer(Duration::from_secs(1))))
    }
}
