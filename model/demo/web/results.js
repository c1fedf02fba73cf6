// On a phone the results sit above the query sources: after a search started further down
// the page, bring them back on screen.
watch('value', () => {
  const top = element.getBoundingClientRect().top;
  if (window.innerWidth < 700 && (top < 0 || top > window.innerHeight * 0.4)) {
    element.scrollIntoView({block: 'start'});
  }
});
