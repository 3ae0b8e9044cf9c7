'use strict';
'require view';
'require form';
'require fs';
'require rpc';
'require uci';
'require ui';

// Every option written here is one the broker's UCI loader understands (tests/openwrt.rs
// checks this against src/config/uci.rs).

var callServiceList = rpc.declare({
	object: 'service',
	method: 'list',
	params: [ 'name' ],
	expect: { '': {} }
});

var PASSWD = '/etc/rmqtt/passwd';

var callInit = rpc.declare({
	object: 'rc',
	method: 'init',
	params: [ 'name', 'action' ],
	expect: { result: false }
});

// A user added or deleted takes effect at once: the broker re-reads its password file on
// reload, keeping its connections.
function reloadBroker() {
	return L.resolveDefault(callInit('rmqtt', 'reload'), false);
}

function isRunning() {
	return L.resolveDefault(callServiceList('rmqtt'), {}).then(function(res) {
		var instances = (res.rmqtt || {}).instances || {};
		return Object.keys(instances).some(function(k) { return instances[k].running; });
	});
}

// Reads a few $SYS topics through rmqtt_sub on the loopback listener. The default
// (allow_anonymous 'local') lets it in without credentials.
function sysValues(port) {
	var topics = {
		'$SYS/broker/clients/connected': _('Connected clients'),
		'$SYS/broker/load/messages/received/1min': _('Messages received per minute'),
		'$SYS/broker/load/messages/sent/1min': _('Messages sent per minute'),
		'$SYS/broker/uptime': _('Uptime')
	};
	var args = [ '-h', '127.0.0.1', '-p', String(port || 1883), '-v', '-W', '2', '-C',
		String(Object.keys(topics).length) ];
	Object.keys(topics).forEach(function(t) { args.push('-t', t); });
	return L.resolveDefault(fs.exec('/usr/bin/rmqtt_sub', args), {}).then(function(res) {
		var rows = [];
		(res.stdout || '').split('\n').forEach(function(line) {
			var sp = line.indexOf(' ');
			if (sp > 0 && topics[line.substring(0, sp)])
				rows.push([ topics[line.substring(0, sp)], line.substring(sp + 1) ]);
		});
		return rows;
	});
}

function passwdUsers() {
	return L.resolveDefault(fs.read(PASSWD), '').then(function(text) {
		return (text || '').split('\n').map(function(l) { return l.split(':')[0]; })
			.filter(function(u) { return u.length > 0 && u.charAt(0) != '#'; });
	});
}

return view.extend({
	load: function() {
		return Promise.all([ isRunning(), uci.load('rmqtt') ]).then(function(r) {
			var port = null;
			uci.sections('rmqtt', 'listener', function(s) {
				if (port == null && s.port) port = s.port;
			});
			return Promise.all([ r[0], r[0] ? sysValues(port) : [], passwdUsers() ]);
		});
	},

	renderStatus: function(running, rows) {
		var table = E('table', { 'class': 'table' }, [
			E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td left', 'width': '33%' }, _('Service')),
				E('td', { 'class': 'td left' }, running ? _('running') : _('not running'))
			])
		]);
		rows.forEach(function(r) {
			table.appendChild(E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td left' }, r[0]), E('td', { 'class': 'td left' }, r[1])
			]));
		});
		return E('div', { 'class': 'cbi-section' }, [ E('h3', _('Status')), table ]);
	},

	// The password file is not UCI: users are added and removed through rmqtt_passwd, which
	// hashes passwords the way mosquitto_passwd does.
	renderUsers: function(users) {
		var name = E('input', { 'class': 'cbi-input-text', 'placeholder': _('Username') });
		var pass = E('input', { 'class': 'cbi-input-password', 'type': 'password',
			'placeholder': _('Password') });
		var list = E('ul', {}, users.map(function(u) {
			return E('li', {}, [ u, ' ', E('button', {
				'class': 'cbi-button cbi-button-remove',
				'click': ui.createHandlerFn(this, function() {
					return fs.exec('/usr/bin/rmqtt_passwd', [ '-D', PASSWD, u ])
						.then(reloadBroker)
						.then(function() { location.reload(); });
				})
			}, _('Delete')) ]);
		}));
		var add = E('button', {
			'class': 'cbi-button cbi-button-add',
			'click': ui.createHandlerFn(this, function() {
				if (!name.value || !pass.value || name.value.indexOf(':') >= 0)
					return ui.addNotification(null, E('p', _('Enter a username (without ":") and a password.')));
				return fs.exec('/usr/bin/rmqtt_passwd', [ '-b', PASSWD, name.value, pass.value ])
					.then(function(res) {
						if (res.code != 0)
							ui.addNotification(null, E('p', res.stderr || _('rmqtt_passwd failed')));
						return reloadBroker();
					}).then(function() { location.reload(); });
			})
		}, _('Add or change user'));
		return E('div', { 'class': 'cbi-section' }, [
			E('h3', _('Users')),
			E('p', _('Accounts in %s, used when anonymous access is off.').format(PASSWD)),
			list, name, ' ', pass, ' ', add
		]);
	},

	render: function(data) {
		var m, s, o;

		m = new form.Map('rmqtt', _('MQTT broker'),
			_('rmqtt, a small MQTT 3.1/3.1.1/5.0 broker. Section and option names are those of the mosquitto package.'));

		s = m.section(form.NamedSection, 'owrt', 'owrt', _('Configuration source'));
		o = s.option(form.Flag, 'use_uci', _('Configure here'),
			_('Off: the broker reads a Mosquitto-syntax file and ignores the settings below.'));
		o.default = '1';
		o.rmempty = false;
		o = s.option(form.Value, 'config_file', _('Mosquitto-syntax file'));
		o.placeholder = '/etc/rmqtt/rmqtt.conf';
		o.depends('use_uci', '0');

		s = m.section(form.NamedSection, 'mosquitto', 'mosquitto', _('General settings'));
		s.addremove = false;
		o = s.option(form.ListValue, 'allow_anonymous', _('Anonymous access'),
			_('Clients without a username and password. "From this router only" lets local services and the status panel in, while devices on the network log in.'));
		o.value('local', _('From this router only'));
		o.value('1', _('From everywhere'));
		o.value('0', _('Nobody'));
		o.default = 'local';
		o.rmempty = false;
		o = s.option(form.Value, 'password_file', _('Password file'));
		o.placeholder = PASSWD;
		o = s.option(form.Value, 'acl_file', _('ACL file'));
		o.placeholder = '/etc/rmqtt/acl';
		o = s.option(form.DynamicList, 'log_dest', _('Log destinations'),
			_('syslog, stdout, stderr, topic, none, or "file PATH".'));
		o = s.option(form.DynamicList, 'log_types', _('Log types'),
			_('error, warning, notice, information, subscribe, unsubscribe, debug, all, none.'));
		o = s.option(form.Flag, 'connection_messages', _('Log connections'));
		o.default = '1';
		o = s.option(form.Flag, 'log_timestamp', _('Timestamps in log lines'));
		o = s.option(form.Value, 'max_connections', _('Maximum clients'), _('-1: no limit.'));
		o.datatype = 'integer';
		o = s.option(form.Value, 'max_inflight_messages', _('Maximum in-flight messages'));
		o.datatype = 'range(0,65535)';
		o.placeholder = '20';
		o = s.option(form.Value, 'max_queued_messages', _('Maximum queued messages'));
		o.datatype = 'uinteger';
		o.placeholder = '1000';
		o = s.option(form.Value, 'message_size_limit', _('Message size limit'), _('Bytes; 0: no limit.'));
		o.datatype = 'uinteger';
		o = s.option(form.Value, 'sys_interval', _('$SYS interval'), _('Seconds; 0: no $SYS topics.'));
		o.datatype = 'uinteger';
		o.placeholder = '10';
		o = s.option(form.Flag, 'set_tcp_nodelay', _('Disable Nagle (TCP_NODELAY)'),
			_('Lower latency per message; off: fewer, fuller packets. The broker batches its writes already.'));
		o.default = '1';

		s = m.section(form.NamedSection, 'persistence', 'persistence', _('Persistence'),
			_('Keep retained messages and sessions across restarts. Every change goes to a journal (in RAM, /tmp, by default: a crash loses nothing, the flash is not written); a snapshot goes to the directory (on flash: survives reboots) every autosave interval and at shutdown.'));
		o = s.option(form.Flag, 'persistence', _('Enable'));
		o = s.option(form.Value, 'location', _('Directory'));
		o.placeholder = '/etc/rmqtt/';
		o = s.option(form.Flag, 'journal', _('Journal'),
			_('Sync every change before it is acknowledged (crash-safe).'));
		o.default = '1';
		o = s.option(form.Value, 'journal_location', _('Journal directory'),
			_('RAM (/tmp) survives a crash, not a reboot; the same directory as the snapshot survives both and writes each change to it.'));
		o.placeholder = '/tmp/rmqtt/';
		o = s.option(form.Value, 'file', _('File name'));
		o.placeholder = 'rmqtt.db';
		o = s.option(form.Value, 'autosave_interval', _('Autosave interval'), _('Seconds.'));
		o.datatype = 'uinteger';
		o.placeholder = '1800';
		o = s.option(form.Value, 'client_expiration', _('Forget idle persistent clients after'),
			_('For example 2d, 1w, 3m.'));

		s = m.section(form.TypedSection, 'listener', _('Listeners'));
		s.anonymous = true;
		s.addremove = true;
		s.tab('general', _('General'));
		s.tab('tls', _('TLS'));
		o = s.taboption('general', form.Value, 'port', _('Port'));
		o.datatype = 'port';
		o.rmempty = false;
		o = s.taboption('general', form.Value, 'bind_address', _('Address'), _('Empty: all addresses.'));
		o.datatype = 'ipaddr';
		o = s.taboption('general', form.ListValue, 'protocol', _('Protocol'));
		o.value('mqtt', 'MQTT');
		o.value('websockets', 'WebSockets');
		o = s.taboption('general', form.ListValue, 'allow_anonymous', _('Anonymous access'));
		o.value('', _('As in general settings'));
		o.value('local', _('From this router only'));
		o.value('1', _('From everywhere'));
		o.value('0', _('Nobody'));
		o = s.taboption('general', form.Value, 'max_connections', _('Maximum clients'));
		o.datatype = 'integer';
		o = s.taboption('tls', form.Value, 'certfile', _('Certificate file'), _('Setting it enables TLS (rmqtt-ssl).'));
		o = s.taboption('tls', form.Value, 'keyfile', _('Key file'));
		o = s.taboption('tls', form.Value, 'cafile', _('CA file'));
		o = s.taboption('tls', form.Flag, 'require_certificate', _('Require client certificates'));
		o = s.taboption('tls', form.Flag, 'use_identity_as_username', _('Certificate name is the username'));
		o = s.taboption('tls', form.ListValue, 'tls_version', _('Minimum TLS version'));
		o.value('', _('Default'));
		o.value('tlsv1.2', 'TLS 1.2');
		o.value('tlsv1.3', 'TLS 1.3');

		s = m.section(form.TypedSection, 'bridge', _('Bridges'),
			_('Forward topics to and from another broker (names as in mosquitto.conf connection blocks). A CA file makes the bridge use TLS; changes apply without dropping local clients.'));
		s.anonymous = true;
		s.addremove = true;
		o = s.option(form.Value, 'connection', _('Name'));
		o = s.option(form.Value, 'address', _('Remote address'), _('host or host:port'));
		o = s.option(form.DynamicList, 'topic', _('Topics'), _('"pattern [in|out|both] [qos] [local-prefix] [remote-prefix]"'));
		o = s.option(form.Value, 'remote_username', _('Remote username'));
		o = s.option(form.Value, 'remote_password', _('Remote password'));
		o.password = true;
		o = s.option(form.Value, 'remote_clientid', _('Remote client id'));
		o = s.option(form.Flag, 'cleansession', _('Clean session'));
		o = s.option(form.Value, 'keepalive_interval', _('Keepalive'));
		o.datatype = 'uinteger';
		o = s.option(form.Value, 'cafile', _('CA file'), _('Setting it makes the bridge use TLS.'));
		o = s.option(form.ListValue, 'tls_version', _('Minimum TLS version'));
		o.value('', _('Default'));
		o.value('tlsv1.2', 'TLS 1.2');
		o.value('tlsv1.3', 'TLS 1.3');
		o = s.option(form.Flag, 'insecure', _('Do not verify the remote host name'));
		o = s.option(form.Flag, 'try_private', _('Try private bridge mode'));
		o = s.option(form.Flag, 'notifications', _('Notifications'));

		return m.render().then(L.bind(function(mapEl) {
			return E('div', {}, [ this.renderStatus(data[0], data[1]), mapEl, this.renderUsers(data[2]) ]);
		}, this));
	}
});
