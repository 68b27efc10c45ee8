// Sign-in: login and password; wrong credentials (401) and throttling (429) come back as the
// server's message in the error banner.

import * as api from '../api.js';
import {h, field, showError} from '../dom.js';

export default {
  title: 'Sign in',
  mount(root, ctx, {message, banners, onSignedIn}) {
    const login = h('input', {name: 'login', autocomplete: 'username', required: true, testid: 'login'});
    const password = h('input', {name: 'password', type: 'password', autocomplete: 'current-password', required: true, testid: 'password'});
    const form = h('form', {class: 'signin', testid: 'sign-in-form'},
      h('h1', {}, 'AOS'),
      h('p', {class: 'muted'}, 'Sign in to the platform.'),
      banners,
      field('Login', login),
      field('Password', password),
      h('button', {type: 'submit', testid: 'sign-in'}, 'Sign in'));
    ctx.form(form, async () => {
      await api.signIn(login.value.trim(), password.value);
      await onSignedIn();
    });
    root.append(form);
    if (message) showError({message});
    login.focus();
  },
};
