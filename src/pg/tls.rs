//! The TLS connector of every module connection (pool and listener):
//! `native-tls`, and inside the encrypted stream a check of the server's
//! authentication requests against `require_auth`, made before the client crate
//! reads them and so before it can answer with the password.

use super::auth::{AuthWatch, RequireAuth};
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use postgres::Socket;
use postgres_native_tls::{MakeTlsConnector, TlsConnector};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Makes the TLS connections to Postgres.
#[derive(Clone)]
pub struct Tls {
    inner: MakeTlsConnector,
    require_auth: Option<RequireAuth>,
}

impl Tls {
    /// A connector with the TLS policy of `connector`, checking authentication
    /// requests against `require_auth` when set.
    pub fn new(connector: native_tls::TlsConnector, require_auth: Option<RequireAuth>) -> Tls {
        Tls { inner: MakeTlsConnector::new(connector), require_auth }
    }
}

impl MakeTlsConnect<Socket> for Tls {
    type Stream = Watched;
    type TlsConnect = Connect;
    type Error = native_tls::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, native_tls::Error> {
        let inner = <MakeTlsConnector as MakeTlsConnect<Socket>>::make_tls_connect(&mut self.inner, domain)?;
        Ok(Connect { inner, require_auth: self.require_auth.clone() })
    }
}

/// Connects one socket.
pub struct Connect {
    inner: TlsConnector,
    require_auth: Option<RequireAuth>,
}

impl TlsConnect<Socket> for Connect {
    type Stream = Watched;
    type Error = native_tls::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Watched, native_tls::Error>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        let watch = self.require_auth.map(AuthWatch::new);
        let handshake = self.inner.connect(socket);
        Box::pin(async move { Ok(Watched { inner: handshake.await?, watch }) })
    }
}

/// A TLS stream whose incoming bytes are checked until authentication is over.
pub struct Watched {
    inner: postgres_native_tls::TlsStream<Socket>,
    watch: Option<AuthWatch>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(watch) = &mut this.watch {
            // An error here reaches the client crate instead of the request,
            // which it therefore never answers.
            watch.inspect(&buf.filled()[before..]).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
            if watch.is_done() {
                this.watch = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl TlsStream for Watched {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}
